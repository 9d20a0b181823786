-- Brute-force protection shared by every server process: failed attempts per
-- identifier and per client IP in a sliding window, with growing delays that expire
-- (never a permanent lock), plus an append-only log of security events (lockouts).

CREATE TABLE private.auth_failures (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- What was checked: password, totp, pin, client_secret.
    kind            text NOT NULL,
    -- SHA-256 of the normalised identifier (email, client id, terminal+staff).
    identifier_hash bytea NOT NULL,
    ip              inet,
    -- The trusted-device id of the browser that failed, if it presented one.
    device          text,
    at              timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_failures_identifier_idx ON private.auth_failures (kind, identifier_hash, at);
CREATE INDEX auth_failures_ip_idx ON private.auth_failures (kind, ip, at);
COMMENT ON TABLE private.auth_failures IS 'Private, platform-level: failed authentication attempts (sliding window).';

CREATE TABLE private.security_events (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at     timestamptz NOT NULL DEFAULT now(),
    kind            text NOT NULL,
    identifier_hash bytea,
    ip              inet,
    detail          jsonb NOT NULL DEFAULT '{}'
);
COMMENT ON TABLE private.security_events IS 'Private, platform-level, append-only: lockouts and other critical events before a venue is known.';
CREATE TRIGGER security_events_no_update_delete BEFORE UPDATE OR DELETE ON private.security_events
    FOR EACH ROW EXECUTE FUNCTION public.audit_reject_change();
CREATE TRIGGER security_events_no_truncate BEFORE TRUNCATE ON private.security_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_reject_change();
ALTER TABLE private.security_events ENABLE ALWAYS TRIGGER security_events_no_update_delete;
ALTER TABLE private.security_events ENABLE ALWAYS TRIGGER security_events_no_truncate;

-- Seconds to wait before the next attempt: the larger of the identifier's and the IP's
-- delay. A limit's delay is 0 below its threshold, then p_base_secs (default 30) doubling per further
-- failure, capped at 15 min, counted from the last failure. Failures older than an hour
-- are forgotten. With p_device, only that device's failures count for the identifier
-- (a browser that logged in before is not held back by strangers' failures).
CREATE FUNCTION private.auth_retry_after(p_kind text, p_identifier bytea, p_ip inet, p_device text,
                                         p_identifier_limit integer, p_ip_limit integer, p_base_secs integer)
    RETURNS integer
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH by_identifier AS (
        SELECT count(*) AS n, max(at) AS last FROM private.auth_failures
        WHERE kind = p_kind AND identifier_hash = p_identifier AND at > now() - interval '1 hour'
          AND (p_device IS NULL OR device = p_device)),
    by_ip AS (
        SELECT count(*) AS n, max(at) AS last FROM private.auth_failures
        WHERE kind = p_kind AND p_ip IS NOT NULL AND ip = p_ip AND at > now() - interval '1 hour'),
    delays AS (
        SELECT CASE WHEN n >= lim
               THEN ceil(extract(epoch FROM (last + make_interval(secs => least(900, p_base_secs * power(2, n - lim)))) - now()))
               ELSE 0 END AS wait
        FROM (SELECT n, last, p_identifier_limit AS lim FROM by_identifier
              UNION ALL SELECT n, last, p_ip_limit FROM by_ip) l)
    SELECT greatest(0, COALESCE(max(wait), 0))::integer FROM delays $$;

CREATE FUNCTION private.record_auth_failure(p_kind text, p_identifier bytea, p_ip inet, p_device text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.auth_failures (kind, identifier_hash, ip, device) VALUES (p_kind, p_identifier, p_ip, p_device) $$;

-- After a success: forget this identifier's failures from this IP (NIST 800-63B 5.2.2).
CREATE FUNCTION private.clear_auth_failures(p_kind text, p_identifier bytea, p_ip inet) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.auth_failures WHERE kind = p_kind AND identifier_hash = p_identifier
          AND ip IS NOT DISTINCT FROM p_ip $$;

CREATE FUNCTION private.record_security_event(p_kind text, p_identifier bytea, p_ip inet, p_detail jsonb) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.security_events (kind, identifier_hash, ip, detail) VALUES (p_kind, p_identifier, p_ip, p_detail) $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.auth_retry_after(text, bytea, inet, text, integer, integer, integer),
    private.record_auth_failure(text, bytea, inet, text),
    private.clear_auth_failures(text, bytea, inet),
    private.record_security_event(text, bytea, inet, jsonb)
    TO venueql_app;
