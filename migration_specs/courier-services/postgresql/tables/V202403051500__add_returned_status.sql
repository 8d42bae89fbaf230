-- Since PostgreSQL 12 ADD VALUE may run in a transaction; the new value just cannot be used in
-- that same transaction, and nothing below uses it.
ALTER TYPE delivery_status ADD VALUE IF NOT EXISTS 'returned' AFTER 'failed';
