-- Append-only log of every stock change; stock_levels is the running total.
CREATE TABLE stock_movements (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    warehouse_id integer NOT NULL REFERENCES warehouses (id),
    product_id   bigint  NOT NULL REFERENCES products (id),
    delta        integer NOT NULL CHECK (delta <> 0),
    reason       text    NOT NULL CHECK (reason IN ('receipt', 'shipment', 'adjustment', 'return', 'reservation')),
    reference    text,
    moved_at     timestamptz NOT NULL DEFAULT now()
);
