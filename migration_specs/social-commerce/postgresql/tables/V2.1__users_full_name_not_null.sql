-- polymigrate: phase=contract, lock_timeout=3s
-- Contract, step 2 of 3. VALIDATE scans the table under SHARE UPDATE EXCLUSIVE only (reads and
-- writes go on), in its own migration so it does not share a transaction with the ADD above.
-- The validated CHECK then lets SET NOT NULL skip its own full-table scan (PostgreSQL 12+).
ALTER TABLE users VALIDATE CONSTRAINT users_full_name_not_null;
ALTER TABLE users ALTER COLUMN full_name SET NOT NULL;
ALTER TABLE users DROP CONSTRAINT users_full_name_not_null;
