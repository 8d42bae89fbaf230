-- Allowed status transitions, enforced in the database so every client obeys them,
-- and each change recorded in delivery_events.
CREATE OR REPLACE FUNCTION delivery_status_transition() RETURNS trigger
    LANGUAGE plpgsql AS
$$
DECLARE
    allowed constant jsonb := '{
        "created":    ["assigned", "failed"],
        "assigned":   ["picked_up", "created", "failed"],
        "picked_up":  ["in_transit", "failed"],
        "in_transit": ["delivered", "failed", "returned"],
        "failed":     ["returned"],
        "delivered":  [],
        "returned":   []
    }';
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.status IS DISTINCT FROM OLD.status THEN
        IF NOT (allowed -> OLD.status::text) ? NEW.status::text THEN
            RAISE EXCEPTION 'delivery %: status % cannot change to %', NEW.id, OLD.status, NEW.status
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO delivery_events (delivery_id, from_status, to_status)
        VALUES (NEW.id, CASE WHEN TG_OP = 'UPDATE' THEN OLD.status END, NEW.status);
    END IF;
    RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER delivery_status_transition
    AFTER INSERT OR UPDATE OF status ON deliveries
    FOR EACH ROW EXECUTE FUNCTION delivery_status_transition();
