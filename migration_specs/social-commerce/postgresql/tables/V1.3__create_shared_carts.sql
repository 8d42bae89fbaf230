-- A cart several friends fill together before one of them checks out.
CREATE TABLE shared_carts (
    id         bigserial PRIMARY KEY,
    owner_id   bigint NOT NULL REFERENCES users (id),
    title      text NOT NULL DEFAULT 'Shared cart',
    currency   common.currency_code NOT NULL DEFAULT 'EUR',
    status     text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'checked_out', 'abandoned'))
);
CALL common.add_audit_columns('shared_carts');

CREATE TABLE shared_cart_items (
    cart_id    bigint NOT NULL REFERENCES shared_carts (id) ON DELETE CASCADE,
    sku        text NOT NULL,
    added_by   bigint NOT NULL REFERENCES users (id),
    quantity   integer NOT NULL CHECK (quantity > 0),
    unit_price common.money_amount NOT NULL,
    PRIMARY KEY (cart_id, sku)
);
CREATE INDEX shared_cart_items_added_by_idx ON shared_cart_items (added_by);
