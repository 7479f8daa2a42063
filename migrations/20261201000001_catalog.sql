-- The catalog (recordings, their metadata and tracklists) and the outbox that projects it into
-- the graph. Like every migration here it runs with warden's schema first in search_path, so
-- the unqualified names below land there (see 20261122000001_config.sql).

-- The extension's functions land in the first schema of search_path, warden's, unless another
-- schema of this database already has it; uuid_generate_v4() resolves through search_path
-- either way, as long as that schema is on it (public is, by default).
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";

CREATE TABLE recordings (
    id          uuid         PRIMARY KEY DEFAULT uuid_generate_v4(),
    file_path   text         NOT NULL,
    file_name   text         NOT NULL,
    sha256_hash varchar(64)  UNIQUE,
    xxh128_hash varchar(32)  UNIQUE,
    created_at  timestamptz  NOT NULL DEFAULT now(),
    updated_at  timestamptz  NOT NULL DEFAULT now(),
    -- Bumped by every change to the recording or its children, in the changing transaction:
    -- the graph projection applies an event only over an older version.
    version     bigint       NOT NULL DEFAULT 1 CHECK (version > 0)
);
-- Keyset pagination walks recordings in creation order.
CREATE INDEX recordings_created_at_id_idx ON recordings (created_at, id);

CREATE TABLE metadata (
    id           uuid         PRIMARY KEY DEFAULT uuid_generate_v4(),
    recording_id uuid         NOT NULL REFERENCES recordings (id) ON DELETE CASCADE,
    key          varchar(255) NOT NULL,
    value        text         NOT NULL,
    UNIQUE (recording_id, key)
);
CREATE INDEX metadata_recording_id_idx ON metadata (recording_id);
CREATE INDEX metadata_key_idx ON metadata (key);

CREATE TABLE tracklists (
    id            uuid         PRIMARY KEY DEFAULT uuid_generate_v4(),
    recording_id  uuid         NOT NULL UNIQUE REFERENCES recordings (id) ON DELETE CASCADE,
    source        varchar(255) NOT NULL,
    -- An array of {title, artist, start_time}; the library validates each entry, the check
    -- keeps a hand-written row from breaking the projection's shape.
    tracks        jsonb        NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(tracks) = 'array'),
    cue_file_path text
);

-- A recording as the graph should show it at its current version: the payload of every
-- `upsert` event, and what `warden project --rebuild` reads. NULL for an absent recording.
CREATE FUNCTION recording_snapshot(rid uuid) RETURNS jsonb
LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'id', r.id,
        'file_path', r.file_path,
        'file_name', r.file_name,
        'sha256_hash', r.sha256_hash,
        'xxh128_hash', r.xxh128_hash,
        'created_at', r.created_at,
        'updated_at', r.updated_at,
        'version', r.version,
        'metadata', COALESCE(
            (SELECT jsonb_agg(jsonb_build_object('id', m.id, 'key', m.key, 'value', m.value)
                              ORDER BY m.key)
             FROM metadata m WHERE m.recording_id = r.id),
            '[]'::jsonb),
        'tracklist', (
            SELECT jsonb_build_object('id', t.id, 'source', t.source, 'tracks', t.tracks,
                                      'cue_file_path', t.cue_file_path)
            FROM tracklists t WHERE t.recording_id = r.id))
    FROM recordings r WHERE r.id = rid
$$;

-- The transactional outbox: every catalog write inserts its event here in the same
-- transaction, so a write is either wholly there with its event or not at all. Rows stay
-- until the projector has applied them (then they are deleted), or turn `dead`.
CREATE TABLE graph_outbox (
    id           bigint       GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The idempotency key a graph write can record.
    event_id     uuid         NOT NULL UNIQUE DEFAULT uuid_generate_v4(),
    -- The ordering key: events of one recording apply one at a time, oldest first. No foreign
    -- key: a delete event outlives its recording.
    recording_id uuid         NOT NULL,
    -- The recording's version after the write (for a delete: one past its last version).
    version      bigint       NOT NULL,
    op           text         NOT NULL CHECK (op IN ('upsert', 'delete')),
    -- upsert: recording_snapshot() at `version`; delete: '{}'.
    payload      jsonb        NOT NULL,
    state        text         NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'dead')),
    -- Only failures the graph gives for a non-transient reason count.
    attempts     integer      NOT NULL DEFAULT 0,
    run_at       timestamptz  NOT NULL DEFAULT now(),
    locked_until timestamptz,
    lease_token  uuid,
    last_error   text,
    created_at   timestamptz  NOT NULL DEFAULT now()
);
-- The claim finds each recording's oldest event (its group's head).
CREATE INDEX graph_outbox_group_idx ON graph_outbox (recording_id, id);

-- A wake-up for the projector, sent at commit. It is only a hint: notifications sent while the
-- listener is disconnected are lost, so the projector also polls. The channel carries the
-- schema's name, so that two wardens with different schemas on one database stay apart.
CREATE FUNCTION graph_outbox_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.graph_outbox', '');
    RETURN NULL;
END
$$;
CREATE TRIGGER graph_outbox_notify AFTER INSERT ON graph_outbox
    FOR EACH STATEMENT EXECUTE FUNCTION graph_outbox_notify();
