-- Reference data every domain joins against; the region codes match the environment specs.
CREATE TABLE countries (
    code         char(2) PRIMARY KEY CHECK (code ~ '^[A-Z]{2}$'),
    name         text NOT NULL,
    region       text NOT NULL CHECK (region IN ('western_europe', 'eastern_europe', 'north_africa', 'sub_saharan_africa')),
    currency     currency_code NOT NULL
);

INSERT INTO countries (code, name, region, currency) VALUES
    ('FR', 'France',        'western_europe',     'EUR'),
    ('DE', 'Germany',       'western_europe',     'EUR'),
    ('PL', 'Poland',        'eastern_europe',     'PLN'),
    ('RO', 'Romania',       'eastern_europe',     'RON'),
    ('MA', 'Morocco',       'north_africa',       'MAD'),
    ('EG', 'Egypt',         'north_africa',       'EGP'),
    ('NG', 'Nigeria',       'sub_saharan_africa', 'NGN'),
    ('KE', 'Kenya',         'sub_saharan_africa', 'KES');

GRANT SELECT ON countries TO ${app_role};
