CREATE TABLE users (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    first_name text,
    last_name text,
    created_at timestamptz NOT NULL DEFAULT now()
);
