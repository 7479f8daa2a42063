-- A wake-up for warden's runtime settings loader whenever the `config` table changes.
--
-- The notification is only a hint (its payload is empty): the loader always reloads the whole
-- table and validates it as one snapshot, and it also polls, since notifications sent while its
-- listening connection is down are lost. FOR EACH STATEMENT: an UPDATE of many rows is one
-- wake-up, not one per row. The channel carries the schema's name (like graph_outbox's), so
-- that two wardens with different schemas on one database stay apart.
CREATE FUNCTION config_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.config', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER config_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON config
    FOR EACH STATEMENT EXECUTE FUNCTION config_notify();
