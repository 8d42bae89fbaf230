-- polymigrate: lock_timeout=3s
-- Nullable column without default: catalog-only change, no rewrite.
ALTER TABLE products ADD COLUMN barcode text;
ALTER TABLE products ADD CONSTRAINT products_barcode_format CHECK (barcode ~ '^[0-9]{8,14}$') NOT VALID;
