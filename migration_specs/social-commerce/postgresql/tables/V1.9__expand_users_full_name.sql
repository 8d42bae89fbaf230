-- polymigrate: phase=expand, lock_timeout=3s
-- Expand step of first_name/last_name -> full_name: a nullable column (no table rewrite, brief lock)
-- and a trigger so application versions that still write first/last name keep full_name in sync.
ALTER TABLE users ADD COLUMN full_name text;

CREATE FUNCTION users_sync_full_name() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    -- recompute when an older application version wrote only first/last name
    IF (TG_OP = 'INSERT' AND NEW.full_name IS NULL)
       OR (TG_OP = 'UPDATE' AND NEW.full_name IS NOT DISTINCT FROM OLD.full_name
           AND (NEW.first_name, NEW.last_name) IS DISTINCT FROM (OLD.first_name, OLD.last_name)) THEN
        NEW.full_name := nullif(concat_ws(' ', NEW.first_name, NEW.last_name), '');
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER users_sync_full_name
    BEFORE INSERT OR UPDATE OF first_name, last_name, full_name ON users
    FOR EACH ROW EXECUTE FUNCTION users_sync_full_name();
