-- add_audit_columns(table): created_at/updated_at columns plus the updated_at trigger, idempotent,
-- so a domain's migration says CALL common.add_audit_columns('orders') instead of repeating DDL.
-- regclass renders as a correctly quoted (and schema-qualified when needed) name, so %s is safe.
CREATE OR REPLACE PROCEDURE add_audit_columns(target regclass)
    LANGUAGE plpgsql AS
$$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS created_at timestamptz NOT NULL DEFAULT now()', target);
    EXECUTE format('ALTER TABLE %s ADD COLUMN IF NOT EXISTS updated_at timestamptz NOT NULL DEFAULT now()', target);
    EXECUTE format('CREATE OR REPLACE TRIGGER set_updated_at BEFORE UPDATE ON %s '
                   'FOR EACH ROW EXECUTE FUNCTION common.set_updated_at()', target);
END
$$;
