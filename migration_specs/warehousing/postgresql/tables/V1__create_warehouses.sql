CREATE TABLE warehouses (
    id           serial PRIMARY KEY,
    code         text NOT NULL UNIQUE CHECK (code ~ '^[A-Z0-9-]{3,16}$'),
    name         text NOT NULL,
    country_code char(2) NOT NULL REFERENCES common.countries (code),
    active       boolean NOT NULL DEFAULT true
);
CALL common.add_audit_columns('warehouses');
