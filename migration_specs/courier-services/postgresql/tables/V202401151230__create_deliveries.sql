CREATE TYPE delivery_status AS ENUM ('created', 'assigned', 'picked_up', 'in_transit', 'delivered', 'failed');

CREATE TABLE deliveries (
    id              bigserial PRIMARY KEY,
    order_reference text NOT NULL UNIQUE,
    courier_id      bigint REFERENCES couriers (id),
    status          delivery_status NOT NULL DEFAULT 'created',
    pickup_address  text NOT NULL,
    dropoff_address text NOT NULL,
    fee             common.money_amount NOT NULL,
    currency        common.currency_code NOT NULL,
    promised_by     timestamptz
);
CALL common.add_audit_columns('deliveries');
