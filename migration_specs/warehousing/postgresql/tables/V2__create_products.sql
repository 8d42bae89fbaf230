CREATE TABLE products (
    id         bigserial PRIMARY KEY,
    sku        text NOT NULL UNIQUE,
    name       text NOT NULL,
    unit_price common.money_amount NOT NULL,
    currency   common.currency_code NOT NULL,
    weight_g   integer CHECK (weight_g > 0)
);
CALL common.add_audit_columns('products');
