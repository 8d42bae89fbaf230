-- reserve_stock: reserve quantity if available, atomically, and log the movement.
-- Returns false (and changes nothing) when not enough free stock is left.
CREATE OR REPLACE FUNCTION reserve_stock(p_warehouse integer, p_product bigint, p_quantity integer, p_reference text)
    RETURNS boolean
    LANGUAGE plpgsql AS
$$
BEGIN
    IF p_quantity <= 0 THEN
        RAISE EXCEPTION 'quantity must be positive, got %', p_quantity;
    END IF;
    UPDATE stock_levels
       SET reserved = reserved + p_quantity
     WHERE warehouse_id = p_warehouse
       AND product_id = p_product
       AND on_hand - reserved >= p_quantity;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO stock_movements (warehouse_id, product_id, delta, reason, reference)
    VALUES (p_warehouse, p_product, -p_quantity, 'reservation', p_reference);
    RETURN true;
END
$$;
