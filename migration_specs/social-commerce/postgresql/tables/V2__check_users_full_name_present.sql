-- polymigrate: phase=contract, lock_timeout=3s
-- Contract, step 1 of 3 (once every application version writes full_name).
-- NOT VALID: the constraint holds for new rows at once, without scanning the table under the lock.
ALTER TABLE users ADD CONSTRAINT users_full_name_not_null CHECK (full_name IS NOT NULL) NOT VALID;
