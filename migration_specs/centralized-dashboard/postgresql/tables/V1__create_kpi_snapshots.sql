-- Daily KPI values, one row per (day, region, metric); the nightly job fills it.
CREATE TABLE kpi_snapshots (
    day     date    NOT NULL,
    region  text    NOT NULL,
    metric  text    NOT NULL,
    value   numeric NOT NULL,
    PRIMARY KEY (day, region, metric)
);
CREATE INDEX kpi_snapshots_metric_day_idx ON kpi_snapshots (metric, day DESC);
