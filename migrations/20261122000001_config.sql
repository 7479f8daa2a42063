-- warden's runtime settings table.
--
-- The schema itself (`postgres.schema`, default walltrack) is created by the migrator with
-- CREATE SCHEMA IF NOT EXISTS before this file runs (Migrator::create_schema), because a
-- migration file cannot take the configured name as a parameter. Every connection has that
-- schema first in its search_path, so the unqualified table below lands in it.
CREATE TABLE IF NOT EXISTS config (
    key        text        PRIMARY KEY,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
