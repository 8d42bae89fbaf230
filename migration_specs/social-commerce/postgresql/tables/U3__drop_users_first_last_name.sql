-- Undo of V3: bring first_name/last_name back, split from full_name (first word / the rest),
-- and restore the expand-phase trigger. The original split of multi-word first names is lost.
ALTER TABLE users ADD COLUMN first_name text, ADD COLUMN last_name text;
UPDATE users
   SET first_name = nullif(split_part(full_name, ' ', 1), ''),
       last_name  = nullif(substr(full_name, length(split_part(full_name, ' ', 1)) + 2), '')
 WHERE full_name IS NOT NULL;

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
