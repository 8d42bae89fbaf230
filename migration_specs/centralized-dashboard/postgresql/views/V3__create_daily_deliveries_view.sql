-- Versioned, not repeatable: a materialized view holds data, so changing it is a new version.
-- The unique index lets REFRESH MATERIALIZED VIEW CONCURRENTLY run without blocking readers.
CREATE MATERIALIZED VIEW daily_deliveries AS
SELECT date_trunc('day', d.created_at)::date AS day,
       coalesce(c.country_code, '??')        AS country_code,
       d.status::text                        AS status,
       count(*)                              AS deliveries,
       sum(d.fee)                            AS fees
  FROM courier_services.deliveries d
  LEFT JOIN courier_services.couriers c ON c.id = d.courier_id
 GROUP BY 1, 2, 3
WITH NO DATA;

-- polymigrate:lint-ignore require-concurrent-index-creation reason: the view is created WITH NO DATA just above, in this file's transaction: nothing reads or writes it while the index builds
CREATE UNIQUE INDEX daily_deliveries_key ON daily_deliveries (day, country_code, status);
