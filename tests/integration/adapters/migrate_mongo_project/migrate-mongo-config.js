// The config a migrate-mongo user has, unchanged but for where the server is (the tests set MM_URL,
// MM_DB). lockTtl: 0 because FerretDB has no TTL indexes (migrate-mongo's lock needs one).
module.exports = {
  mongodb: {
    url: process.env.MM_URL,
    databaseName: process.env.MM_DB,
    options: {},
  },
  migrationsDir: 'migrations',
  changelogCollectionName: 'changelog',
  lockCollectionName: 'changelog_lock',
  lockTtl: 0,
  migrationFileExtension: '.js',
  useFileHash: process.env.MM_FILE_HASH === 'true',
  moduleSystem: 'commonjs',
};
