-- Dashboard layout: which widget shows which metric, per team.
CREATE TABLE widgets (
    id        serial PRIMARY KEY,
    team      text  NOT NULL,
    title     text  NOT NULL,
    metric    text  NOT NULL,
    settings  jsonb NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(settings) = 'object'),
    position  smallint NOT NULL DEFAULT 0,
    UNIQUE (team, title)
);
CALL common.add_audit_columns('widgets');
