CREATE OR REPLACE VIEW active_deliveries AS
SELECT d.id,
       d.order_reference,
       d.status,
       c.display_name AS courier,
       c.country_code,
       d.promised_by,
       d.promised_by < now() AS late
  FROM deliveries d
  LEFT JOIN couriers c ON c.id = d.courier_id
 WHERE d.status NOT IN ('delivered', 'failed');
