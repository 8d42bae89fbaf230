CREATE TABLE couriers (
    id           bigserial PRIMARY KEY,
    display_name text NOT NULL,
    phone_e164   text NOT NULL UNIQUE CHECK (phone_e164 ~ '^\+[1-9][0-9]{6,14}$'),
    country_code char(2) NOT NULL REFERENCES common.countries (code),
    vehicle      text NOT NULL CHECK (vehicle IN ('bicycle', 'scooter', 'car', 'van')),
    active       boolean NOT NULL DEFAULT true
);
CALL common.add_audit_columns('couriers');
