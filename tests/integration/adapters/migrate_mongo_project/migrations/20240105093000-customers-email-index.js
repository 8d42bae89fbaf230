// Customers are looked up by e-mail at login: a unique index, and the old non-unique one goes.
module.exports = {
  async up(db) {
    await db.collection('customers').createIndex({ email: 1 }, { name: 'email_unique', unique: true });
    await db.collection('customers').createIndex({ 'address.city': 1 }, { name: 'city' });
  },

  async down(db) {
    await db.collection('customers').dropIndex('email_unique');
    await db.collection('customers').dropIndex('city');
  },
};
