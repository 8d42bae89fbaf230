-- Undo of V2.1: full_name may be null again (older application versions may write first/last only).
ALTER TABLE users ALTER COLUMN full_name DROP NOT NULL;
