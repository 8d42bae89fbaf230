-- One row of headline numbers across domains, for the landing page.
CREATE OR REPLACE VIEW domain_overview AS
SELECT (SELECT count(*) FROM social_commerce.users)                                  AS users,
       (SELECT count(*) FROM social_commerce.shared_carts WHERE status = 'open')     AS open_shared_carts,
       (SELECT count(*) FROM warehousing.low_stock)                                  AS low_stock_items,
       (SELECT count(*) FROM courier_services.active_deliveries)                     AS active_deliveries,
       (SELECT count(*) FROM courier_services.active_deliveries WHERE late)          AS late_deliveries;
