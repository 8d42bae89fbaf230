// Adopted from the courier team's migrate-mongo project, unchanged: polymigrate runs it with Node and
// the official driver. photo_key (a string) becomes photo: {key, bucket}, as the new app reads it.
const BUCKET = 'courier-proof-of-delivery';

module.exports = {
  async up(db) {
    const pod = db.collection('proof_of_delivery');
    await pod.updateMany({ photo_key: { $exists: true } }, { $rename: { photo_key: 'photo.key' } });
    await pod.updateMany({ 'photo.key': { $exists: true }, 'photo.bucket': { $exists: false } },
      { $set: { 'photo.bucket': BUCKET } });
  },

  async down(db) {
    const pod = db.collection('proof_of_delivery');
    await pod.updateMany({ 'photo.key': { $exists: true } }, { $rename: { 'photo.key': 'photo_key' } });
    await pod.updateMany({ photo: { $exists: true } }, { $unset: { photo: '' } });
  },
};
