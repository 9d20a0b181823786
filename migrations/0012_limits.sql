-- Rate limits that hold for the deployment (issue 11): every server process registers
-- here and counts the live ones, so each enforces its share of every limit (src/limits.rs).

CREATE TABLE private.server_instances (
    id         uuid PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE private.server_instances IS 'Private, platform-level: live server processes (heartbeats), for rate-limit shares.';

-- Marks a process alive; forgets long-dead ones; answers how many were seen within the window.
CREATE FUNCTION private.heartbeat_instance(p_id uuid, p_window_secs integer) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO private.server_instances (id) VALUES (p_id)
    ON CONFLICT (id) DO UPDATE SET last_seen = now();
    DELETE FROM private.server_instances WHERE last_seen < now() - make_interval(secs => p_window_secs * 20);
    RETURN (SELECT count(*) FROM private.server_instances WHERE last_seen > now() - make_interval(secs => p_window_secs));
END $$;

-- A process leaving (graceful shutdown).
CREATE FUNCTION private.retire_instance(p_id uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.server_instances WHERE id = p_id $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.heartbeat_instance(uuid, integer), private.retire_instance(uuid) TO venueql_app;
