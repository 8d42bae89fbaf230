-- polymigrate: transactional=false, lock_timeout=5s
-- Open deliveries per courier, the dispatcher's hottest query; partial, so it stays small.
CREATE INDEX CONCURRENTLY IF NOT EXISTS deliveries_courier_open_idx
    ON deliveries (courier_id, status)
    WHERE status NOT IN ('delivered', 'failed');
