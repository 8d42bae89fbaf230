CREATE OR REPLACE VIEW low_stock AS
SELECT w.code AS warehouse,
       p.sku,
       p.name,
       s.on_hand,
       s.reserved,
       s.on_hand - s.reserved AS available,
       s.reorder_at
  FROM stock_levels s
  JOIN warehouses w ON w.id = s.warehouse_id
  JOIN products p   ON p.id = s.product_id
 WHERE s.on_hand - s.reserved <= s.reorder_at;
