// address.zip becomes address.postal_code everywhere; the notes collection gets its final name.
module.exports = {
  async up(db, client) {
    await db.collection('customers').updateMany(
      { 'address.zip': { $exists: true } },
      { $rename: { 'address.zip': 'address.postal_code' } },
    );
    await db.collection('cust_notes').rename('customer_notes');
  },

  async down(db, client) {
    await db.collection('customer_notes').rename('cust_notes');
    await db.collection('customers').updateMany(
      { 'address.postal_code': { $exists: true } },
      { $rename: { 'address.postal_code': 'address.zip' } },
    );
  },
};
