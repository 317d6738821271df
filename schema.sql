-- The reference application's demo schema: `users` for GET /users/:id and `world` for
-- GET /db (TechEmpower's single-query test). Safe to run again: it recreates both tables.
--
--   psql "$DATABASE_URL" -f schema.sql

DROP TABLE IF EXISTS users;
CREATE TABLE users (
    id         bigint PRIMARY KEY,
    name       text NOT NULL,
    email      text,
    age        integer,
    score      double precision,
    balance    numeric(12, 2),
    active     boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    tags       text[],
    profile    jsonb
);

INSERT INTO users (id, name, email, age, score, balance, active, created_at, tags, profile) VALUES
    (1, 'Ada Lovelace', 'ada@example.com', 36, 99.5, 1234.56, true,
     '2024-01-02 03:04:05+00', ARRAY['math', 'engines'], '{"lang": "en", "notes": [1, 2]}'),
    (2, 'Alan Turing', 'alan@example.com', 41, 88.25, 0.10, false,
     '2024-06-07 08:09:10+00', ARRAY['codes'], '{"lang": "en"}'),
    (3, 'Grace "Amazing" Hopper', NULL, NULL, NULL, NULL, true,
     '2024-12-31 23:59:59+00', NULL, NULL);

DROP TABLE IF EXISTS world;
CREATE TABLE world (
    id           integer PRIMARY KEY,
    randomnumber integer NOT NULL
);
INSERT INTO world (id, randomnumber)
    SELECT i, 1 + floor(random() * 10000)::integer FROM generate_series(1, 10000) AS i;
