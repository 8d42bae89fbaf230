-- refresh_reporting(): called by the nightly job. The first refresh cannot be CONCURRENTLY
-- (the view is created WITH NO DATA), later ones are, so readers are never blocked.
CREATE OR REPLACE PROCEDURE refresh_reporting()
    LANGUAGE plpgsql AS
$$
BEGIN
    IF (SELECT ispopulated FROM pg_matviews WHERE schemaname = current_schema() AND matviewname = 'daily_deliveries') THEN
        REFRESH MATERIALIZED VIEW CONCURRENTLY daily_deliveries;
    ELSE
        REFRESH MATERIALIZED VIEW daily_deliveries;
    END IF;
END
$$;
