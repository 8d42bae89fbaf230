// Loyalty tiers from lifetime spend, in one bulkWrite; legacy flags are folded into the tier.
const TIERS = [
  { name: 'gold', min: 900 },
  { name: 'silver', min: 400 },
  { name: 'bronze', min: 0 },
];

module.exports = {
  async up(db) {
    const ops = TIERS.map((tier, i) => ({
      updateMany: {
        filter: { lifetime_spend: { $gte: tier.min, ...(i > 0 ? { $lt: TIERS[i - 1].min } : {}) } },
        update: { $set: { loyalty: { tier: tier.name, since: new Date('2024-03-01T12:00:00Z') } } },
      },
    }));
    ops.push({ updateMany: { filter: { legacy_flags: 'vip' }, update: { $set: { 'loyalty.vip': true } } } });
    ops.push({ updateMany: { filter: {}, update: { $unset: { legacy_flags: '' } } } });
    await db.collection('customers').bulkWrite(ops, { ordered: true });
  },

  async down(db) {
    await db.collection('customers').updateMany({}, { $unset: { loyalty: '' } });
  },
};
