-- polymigrate: phase=contract, lock_timeout=3s
-- Contract, step 3 of 3: nothing reads first_name/last_name any more.
DROP TRIGGER users_sync_full_name ON users;
DROP FUNCTION users_sync_full_name();
-- polymigrate:lint-ignore ban-drop-column reason: contract step of the full_name change; every application release since 2026.11 reads and writes full_name only (U3 restores the columns)
ALTER TABLE users DROP COLUMN first_name, DROP COLUMN last_name;
