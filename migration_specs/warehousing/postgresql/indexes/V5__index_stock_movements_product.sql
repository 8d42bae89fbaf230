-- No directive needed: the PostgreSQL adapter parses the file and runs CONCURRENTLY statements
-- outside a transaction by itself.
CREATE INDEX CONCURRENTLY IF NOT EXISTS stock_movements_product_idx
    ON stock_movements (product_id, moved_at DESC);
