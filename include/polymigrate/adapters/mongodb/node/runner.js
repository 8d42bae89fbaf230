// polymigrate's runner for MongoDB .js migrations in migrate-mongo's format:
//   module.exports = { async up(db, client) {...}, async down(db, client) {...} }
// run unchanged with the official `mongodb` driver, as migrate-mongo itself runs them.
//
// Request: one JSON document on stdin; the connection string in POLYMIGRATE_MONGO_URL (never argv,
// so it never shows in `ps`). Reply: the last line of stdout, {"ok": true, ...} or
// {"ok": false, "error": {...}}. The migration's own console output goes to stderr.
//
//   {"action": "check", "files": [{"path": "..."}]}
//       compile each file without running it and resolve every require()/import it names,
//       so a missing module fails before anything runs: {"ok": true, "problems": [...]}
//   {"action": "run", "fn": "up"|"down", "file": {"path", "source"}, "db": "name",
//    "lease": {"collection", "key", "holder", "token", "every_ms"}}
//       load the file (the rendered source, compiled under its real path so relative requires
//       work), connect, call fn(db, client), close. While it runs, the lease is checked: if
//       another run took the lock, the process exits (75) instead of writing on.
'use strict';

const fs = require('fs');
const path = require('path');
const vm = require('vm');
const Module = require('module');
const { pathToFileURL } = require('url');

const out = process.stdout.write.bind(process.stdout);
for (const name of ['log', 'info', 'debug', 'warn']) {
  console[name] = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
}

function reply(doc) {
  out(JSON.stringify(doc) + '\n');
}

const REQUIRE = /\brequire\s*\(\s*(['"`])([^'"`]+)\1\s*\)/g;
const IMPORT = /(?:^|[^.\w])import\s*(?:[\w*{}\s,$]+from\s*)?\(?\s*(['"])([^'"]+)\1/g;
const ESM = /^\s*(?:import\s[^(]|import\{|export\s)/m;

function lineOf(text, index) {
  return text.slice(0, index).split('\n').length;
}

function checkFile(file) {
  const problems = [];
  let source;
  try {
    source = file.source !== undefined ? file.source : fs.readFileSync(file.path, 'utf8');
  } catch (e) {
    return [{ path: file.path, line: null, message: `cannot read: ${e.message}` }];
  }
  const esm = ESM.test(source);
  if (!esm) {
    try {
      new vm.Script(Module.wrap(source), { filename: file.path });
    } catch (e) {
      const m = /:(\d+)/.exec((e.stack || '').split('\n')[0]);
      problems.push({ path: file.path, line: m ? Number(m[1]) : null, message: `${e.name}: ${e.message}` });
    }
  }
  const req = Module.createRequire(file.path);
  const seen = new Set();
  for (const pattern of esm ? [REQUIRE, IMPORT] : [REQUIRE]) {
    pattern.lastIndex = 0;
    let m;
    while ((m = pattern.exec(source)) !== null) {
      const name = m[2];
      if (seen.has(name)) continue;
      seen.add(name);
      try {
        req.resolve(name);
      } catch (e) {
        problems.push({
          path: file.path, line: lineOf(source, m.index), module: name,
          message: `requires '${name}', which is not installed (looked in ${[path.dirname(file.path) + '/node_modules (and above)', ...(process.env.NODE_PATH || '').split(path.delimiter).filter(Boolean)].join(', ')})`,
        });
      }
    }
  }
  return problems;
}

async function load(file) {
  const source = file.source !== undefined ? file.source : fs.readFileSync(file.path, 'utf8');
  if (ESM.test(source)) {
    if (source !== fs.readFileSync(file.path, 'utf8')) {
      throw new Error('placeholders are not supported in ES-module migrations; use module.exports');
    }
    return import(pathToFileURL(file.path).href);
  }
  const m = new Module(file.path, module);
  m.filename = file.path;
  m.paths = Module._nodeModulePaths(path.dirname(file.path));
  m._compile(source, file.path);
  return m.exports;
}

function describe(e, file) {
  const stack = String(e && e.stack || e);
  let line = null;
  const where = stack.split('\n').find((l) => l.includes(file.path + ':'));
  if (where) {
    const m = new RegExp(file.path.replace(/[.*+?^${}()|[\]\\]/g, '\\$&') + ':(\\d+)').exec(where);
    if (m) line = Number(m[1]);
  }
  return {
    name: e && e.name || 'Error', message: e && e.message || String(e), code: e && e.code,
    codeName: e && e.codeName, labels: e && typeof e.hasErrorLabel === 'function' ?
      ['RetryableWriteError', 'TransientTransactionError', 'ResetPool', 'PoolRequestedRetry'].filter((l) => e.hasErrorLabel(l)) : [],
    line, stack: stack.split('\n').slice(0, 12).join('\n'),
  };
}

async function watchLease(db, lease, stop) {
  const coll = db.collection(lease.collection);
  while (!stop.done) {
    await new Promise((r) => setTimeout(r, lease.every_ms).unref());
    if (stop.done) return;
    try {
      const [doc, hello] = await Promise.all([coll.findOne({ _id: lease.key }), db.admin().command({ hello: 1 })]);
      const now = hello.localTime instanceof Date ? hello.localTime : new Date();
      if (!doc || doc.holder !== lease.holder || doc.token !== lease.token || doc.expires_at <= now) {
        reply({ ok: false, error: { name: 'LeaseLost', message: `the migration lock passed to ${doc ? String(doc.holder).split(' #')[0] : 'nobody'} (token ${doc && doc.token}, ours ${lease.token}); stopped` } });
        process.exit(75);
      }
    } catch (e) {
      // a failed check is not a lost lease; the Python side decides after the run
    }
  }
}

async function run(req) {
  let driver;
  try {
    driver = require('mongodb');
  } catch (e) {
    throw Object.assign(new Error(`the 'mongodb' Node driver is not installed (NODE_PATH=${process.env.NODE_PATH || ''}); run \`bash scripts/engines.sh up node\` or set POLYMIGRATE_NODE_MODULES`), { name: 'DriverMissing' });
  }
  const mod = await load(req.file);
  const fn = mod && (mod[req.fn] || (mod.default && mod.default[req.fn]));
  if (typeof fn !== 'function') {
    throw Object.assign(new Error(`${path.basename(req.file.path)} exports no ${req.fn}() (migrate-mongo format: module.exports = { async up(db, client) {…}, async down(db, client) {…} })`), { name: 'NotAMigration' });
  }
  const client = new driver.MongoClient(process.env.POLYMIGRATE_MONGO_URL, { appName: 'polymigrate-js' });
  await client.connect();
  const stop = { done: false };
  try {
    const db = client.db(req.db);
    if (req.lease) watchLease(db, req.lease, stop);
    const started = Date.now();
    if (fn.length >= 3) {
      await new Promise((resolve, reject) => {
        const r = fn.call(mod, db, client, (err) => (err ? reject(err) : resolve()));
        if (r && typeof r.then === 'function') r.then(resolve, reject);
      });
    } else {
      await fn.call(mod, db, client);
    }
    return { ms: Date.now() - started };
  } finally {
    stop.done = true;
    await client.close();
  }
}

// A killed parent (kill -9 of the run) must not leave its migration running: once we are
// reparented, stop.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) process.exit(70);
}, 250).unref();

async function main() {
  const input = fs.readFileSync(0, 'utf8');
  const req = JSON.parse(input);
  if (req.action === 'check') {
    reply({ ok: true, problems: req.files.flatMap(checkFile) });
    return;
  }
  try {
    const result = await run(req);
    reply({ ok: true, ...result });
  } catch (e) {
    reply({ ok: false, error: describe(e, req.file) });
    process.exitCode = 1;
  }
}

main().catch((e) => {
  reply({ ok: false, error: { name: e.name, message: e.message, stack: String(e.stack) } });
  process.exitCode = 1;
});
