-- Money is stored as exact numerics with an ISO 4217 currency next to it, never as float and
-- never as PostgreSQL's locale-dependent built-in `money` type.
CREATE DOMAIN money_amount AS numeric(14, 2)
    CHECK (VALUE >= 0);

COMMENT ON DOMAIN money_amount IS 'Non-negative amount with two decimals; pair it with currency_code.';

CREATE DOMAIN currency_code AS char(3)
    CHECK (VALUE ~ '^[A-Z]{3}$');

COMMENT ON DOMAIN currency_code IS 'ISO 4217 alphabetic code, e.g. EUR, MAD, NGN.';
