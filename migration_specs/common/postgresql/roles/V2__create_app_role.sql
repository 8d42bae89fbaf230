-- The role the applications connect as. Its name comes from the environment spec
-- (placeholders.app_role), so each environment can use its own.
-- Roles are cluster-wide: create it only when another database has not done so already.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${app_role}') THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', '${app_role}');
    END IF;
END
$$;

GRANT USAGE ON SCHEMA common TO ${app_role};
