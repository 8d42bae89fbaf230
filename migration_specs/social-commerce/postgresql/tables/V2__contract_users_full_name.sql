-- polymigrate: lock_timeout=3s
-- Contract step, once every application version reads and writes full_name only.
-- A validated CHECK lets SET NOT NULL skip its full-table scan (PostgreSQL 12+).
ALTER TABLE users ADD CONSTRAINT users_full_name_not_null CHECK (full_name IS NOT NULL) NOT VALID;
ALTER TABLE users VALIDATE CONSTRAINT users_full_name_not_null;
ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_full_name_not_null;

DROP TRIGGER users_sync_full_name ON users;
DROP FUNCTION users_sync_full_name();
ALTER TABLE users DROP COLUMN first_name, DROP COLUMN last_name;
