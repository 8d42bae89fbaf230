-- One row per (warehouse, product); reserved stock can never exceed what is on hand.
CREATE TABLE stock_levels (
    warehouse_id integer NOT NULL REFERENCES warehouses (id),
    product_id   bigint  NOT NULL REFERENCES products (id),
    on_hand      integer NOT NULL DEFAULT 0 CHECK (on_hand >= 0),
    reserved     integer NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    reorder_at   integer NOT NULL DEFAULT 10,
    PRIMARY KEY (warehouse_id, product_id),
    CONSTRAINT stock_reserved_within_on_hand CHECK (reserved <= on_hand)
);
CALL common.add_audit_columns('stock_levels');
