-- polymigrate: phase=migrate, backfill=true, batch_size=5000, statement_timeout=5min
-- Migrate step of the full_name release: fill full_name for every row the expand trigger has not
-- touched yet, in keyset batches on users.id, each its own short transaction with its checkpoint
-- (docs/postgresql.md#backfills), while the application keeps reading and writing users.
-- Rows without any name get '' so the contract step can make the column NOT NULL.
UPDATE users SET full_name = concat_ws(' ', first_name, last_name) WHERE full_name IS NULL;
