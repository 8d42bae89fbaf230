-- grant_app_access(role): what the application role may do in the caller's schema (current_schema()),
-- including tables created later, so domains never hard-code their schema name in a grant.
CREATE OR REPLACE PROCEDURE grant_app_access(app_role name)
    LANGUAGE plpgsql AS
$$
DECLARE
    target_schema name := current_schema();
BEGIN
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', target_schema, app_role);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I', target_schema, app_role);
    EXECUTE format('GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA %I TO %I', target_schema, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
                   target_schema, app_role);
    EXECUTE format('ALTER DEFAULT PRIVILEGES IN SCHEMA %I GRANT USAGE, SELECT ON SEQUENCES TO %I', target_schema, app_role);
END
$$;
