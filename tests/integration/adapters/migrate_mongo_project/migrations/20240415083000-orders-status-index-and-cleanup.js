// Orders: a compound index for the "my recent orders by status" page, and the load-test orders go.
module.exports = {
  async up(db) {
    const orders = db.collection('orders');
    await orders.createIndex({ customer_id: 1, status: 1, total: -1 }, { name: 'customer_status_total' });
    const { deletedCount } = await orders.deleteMany({ test: true });
    console.log(`removed ${deletedCount} test orders`);
    await orders.updateMany({}, { $unset: { test: '' } });
  },

  async down(db) {
    await db.collection('orders').dropIndex('customer_status_total');
  },
};
