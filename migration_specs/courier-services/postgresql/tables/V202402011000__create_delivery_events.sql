-- Status history, written by the transition trigger (R__delivery_status_transition.sql).
CREATE TABLE delivery_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id bigint NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    from_status delivery_status,
    to_status   delivery_status NOT NULL,
    at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_events_delivery_idx ON delivery_events (delivery_id, at);
