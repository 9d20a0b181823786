-- Audit an auditor accepts (issue 15):
--   * keyed seals: each audit row's chain hash sealed with HMAC-SHA256 under
--     AUDIT_HMAC_KEY, a key that never enters the database, so a superuser who edits a
--     row and recomputes the plain SHA-256 chain forward still fails `audit verify`;
--   * the heads of every venue's chain (for the WORM exporter, without reading tenant
--     rows across venues) and the exporter's resume cursors;
--   * the critical-alert outbox, its per-(kind, venue) rate-limit windows and the
--     deliveries to ALERT_WEBHOOK_URL.

-- ───────────────────────────── keyed seals ─────────────────────────────

CREATE TABLE audit_seals (
    venue_id uuid NOT NULL,
    seq      bigint NOT NULL,
    -- Which AUDIT_HMAC_KEY sealed the row (an HMAC of a fixed label, not the key).
    key_id   text NOT NULL,
    -- HMAC-SHA256(key, 'venueql.audit.seal.v1' || venue_id || seq || row_hash).
    mac      bytea NOT NULL CONSTRAINT audit_seals_mac_length CHECK (length(mac) = 32),
    PRIMARY KEY (venue_id, seq),
    FOREIGN KEY (venue_id, seq) REFERENCES audit_events (venue_id, seq)
);
COMMENT ON TABLE audit_seals IS 'Tenant, append-only: the keyed seal of each audit row (HMAC under a key outside the database).';

ALTER TABLE audit_seals ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_seals FORCE ROW LEVEL SECURITY;
CREATE POLICY venue_isolation ON audit_seals AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform
    USING (venue_id = (SELECT public.current_venue_id()))
    WITH CHECK (venue_id = (SELECT public.current_venue_id()));
GRANT SELECT, INSERT ON audit_seals TO venueql_app, venueql_platform;

CREATE TRIGGER audit_seals_no_update_delete BEFORE UPDATE OR DELETE ON audit_seals
    FOR EACH ROW EXECUTE FUNCTION public.audit_reject_change();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_reject_change();
ALTER TABLE audit_seals ENABLE ALWAYS TRIGGER audit_seals_no_update_delete;
ALTER TABLE audit_seals ENABLE ALWAYS TRIGGER audit_seals_no_truncate;

-- ───────────────────────────── chain heads and export cursors ─────────────────────────────

CREATE TABLE private.audit_heads (
    venue_id uuid PRIMARY KEY,
    seq      bigint NOT NULL
);
COMMENT ON TABLE private.audit_heads IS 'Private, platform-level: the newest sequence number of each venue''s audit chain.';

CREATE TABLE private.audit_export_cursors (
    -- 'venue:<uuid>' or 'platform'.
    stream          text PRIMARY KEY,
    -- The last sequence number (venue) or id (platform) known to be in the WORM copy.
    shipped_through bigint NOT NULL,
    -- The platform stream's ids are assigned at insert, not commit: a missing id may still
    -- commit. The gap after gap_after was first seen by transaction gap_xid; once every
    -- transaction older than that has ended, the id can no longer appear.
    gap_after       bigint,
    gap_xid         xid8,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE private.audit_export_cursors IS 'Private, platform-level: how far each audit stream is in the WORM copy.';

-- Records the head of a venue's chain, after each insert (the chain trigger's per-venue
-- lock is still held, so heads only move forward).
CREATE FUNCTION private.note_audit_head() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO private.audit_heads (venue_id, seq) VALUES (NEW.venue_id, NEW.seq)
        ON CONFLICT (venue_id) DO UPDATE SET seq = GREATEST(private.audit_heads.seq, EXCLUDED.seq);
    RETURN NULL;
END $$;
CREATE TRIGGER audit_events_head AFTER INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION private.note_audit_head();
ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_head;

-- Chains written before this migration (the owner reads past row-level security once).
ALTER TABLE audit_events NO FORCE ROW LEVEL SECURITY;
INSERT INTO private.audit_heads (venue_id, seq)
    SELECT venue_id, max(seq) FROM audit_events GROUP BY venue_id;
ALTER TABLE audit_events FORCE ROW LEVEL SECURITY;

-- A venue's refusals of other venues' credentials are looked up by action and time (at
-- most one row per credential and minute is written).
CREATE INDEX audit_events_action_idx ON audit_events (venue_id, action, occurred_at);

-- Venues whose chain has rows the WORM copy does not hold yet, with where it stands.
CREATE FUNCTION private.audit_export_due() RETURNS TABLE (venue_id uuid, shipped_through bigint, head bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT h.venue_id, COALESCE(c.shipped_through, 0), h.seq FROM private.audit_heads h
          LEFT JOIN private.audit_export_cursors c ON c.stream = 'venue:' || h.venue_id::text
          WHERE h.seq > COALESCE(c.shipped_through, 0) ORDER BY h.venue_id $$;

CREATE FUNCTION private.audit_export_cursor(p_stream text) RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT COALESCE((SELECT shipped_through FROM private.audit_export_cursors WHERE stream = p_stream), 0) $$;

-- Moves a stream's cursor forward (never back), after the batch is in the WORM copy.
CREATE FUNCTION private.advance_audit_export(p_stream text, p_through bigint) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.audit_export_cursors (stream, shipped_through) VALUES (p_stream, p_through)
          ON CONFLICT (stream) DO UPDATE SET shipped_through = GREATEST(private.audit_export_cursors.shipped_through, EXCLUDED.shipped_through),
                                             updated_at = now() $$;

-- The platform stream: platform_audit_events after p_after, oldest first, stopping at a
-- missing id that a running transaction may still commit (a gap is passed once every
-- transaction that was running when it was first seen has ended: then it was rolled back).
CREATE FUNCTION private.platform_audit_batch(p_after bigint, p_limit integer)
    RETURNS TABLE (id bigint, occurred_at timestamptz, actor text, reason text, venue_id uuid)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    expected bigint := p_after + 1;
    r record;
    seen_after bigint;
    seen_xid xid8;
BEGIN
    SELECT c.gap_after, c.gap_xid INTO seen_after, seen_xid FROM private.audit_export_cursors c WHERE c.stream = 'platform';
    FOR r IN SELECT p.id, p.occurred_at, p.actor, p.reason, p.venue_id FROM public.platform_audit_events p
             WHERE p.id > p_after ORDER BY p.id LIMIT p_limit
    LOOP
        IF r.id <> expected THEN
            IF seen_after IS DISTINCT FROM expected - 1 THEN
                INSERT INTO private.audit_export_cursors (stream, shipped_through, gap_after, gap_xid)
                    VALUES ('platform', p_after, expected - 1, pg_current_xact_id())
                    ON CONFLICT (stream) DO UPDATE SET gap_after = EXCLUDED.gap_after, gap_xid = EXCLUDED.gap_xid;
                RETURN;
            END IF;
            IF pg_snapshot_xmin(pg_current_snapshot()) <= seen_xid THEN
                RETURN;
            END IF;
        END IF;
        id := r.id; occurred_at := r.occurred_at; actor := r.actor; reason := r.reason; venue_id := r.venue_id;
        RETURN NEXT;
        expected := r.id + 1;
    END LOOP;
END $$;

-- ───────────────────────────── critical alerts ─────────────────────────────

CREATE TABLE private.alert_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind        text NOT NULL CONSTRAINT alert_events_kind_known CHECK (kind IN (
                    'refresh_token_reuse', 'lockout', 'cross_venue_refused', 'elevated_grant',
                    'signature_failure_burst', 'paid_without_order', 'payment_mismatch', 'dispute',
                    'key_rotation', 'venue_offboarded', 'large_refund')),
    -- The venue concerned, when there is one (no foreign key: offboarding keeps the trail).
    venue_id    uuid,
    -- What happened, without personal data (ids, counts, kinds only).
    summary     text NOT NULL CONSTRAINT alert_events_summary_length CHECK (length(summary) BETWEEN 1 AND 500),
    -- The delivery that carried it (NULL while it waits for one).
    delivery_id bigint
);
CREATE INDEX alert_events_waiting ON private.alert_events (kind, venue_id) WHERE delivery_id IS NULL;
COMMENT ON TABLE private.alert_events IS 'Private, platform-level: critical events waiting to be alerted (outbox written in the event''s transaction).';

CREATE TABLE private.alert_windows (
    kind      text NOT NULL,
    -- The venue, or the nil UUID for platform-wide alerts.
    venue_key uuid NOT NULL,
    opened_at timestamptz NOT NULL,
    PRIMARY KEY (kind, venue_key)
);
COMMENT ON TABLE private.alert_windows IS 'Private: the rate-limit window of each (kind, venue): one alert at once, then digests.';

CREATE TABLE private.alert_deliveries (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    kind            text NOT NULL,
    venue_id        uuid,
    digest          boolean NOT NULL,
    events          integer NOT NULL,
    first_at        timestamptz NOT NULL,
    last_at         timestamptz NOT NULL,
    summary         text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    locked_until    timestamptz,
    delivered_at    timestamptz,
    last_error      text
);
CREATE INDEX alert_deliveries_due ON private.alert_deliveries (next_attempt_at) WHERE delivered_at IS NULL;
COMMENT ON TABLE private.alert_deliveries IS 'Private: alerts and digests to deliver to ALERT_WEBHOOK_URL, retried until delivered.';

CREATE FUNCTION private.raise_alert(p_kind text, p_venue uuid, p_summary text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.alert_events (kind, venue_id, summary) VALUES (p_kind, p_venue, p_summary) $$;

-- Turns waiting events into deliveries, per (kind, venue): when no window is open, the
-- first event goes at once and a window of p_digest_secs opens; events during a window
-- wait, and when it ends they go as one digest (and a new window opens). Returns the
-- deliveries made. Serialised across server processes.
CREATE FUNCTION private.plan_alerts(p_digest_secs integer) RETURNS SETOF private.alert_deliveries
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE
    g record;
    opened timestamptz;
    window_end timestamptz;
    made private.alert_deliveries;
    first_event private.alert_events;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('venueql.alerts', 0));
    FOR g IN SELECT e.kind, e.venue_id, COALESCE(e.venue_id, '00000000-0000-0000-0000-000000000000'::uuid) AS venue_key,
                    count(*) AS n, min(e.occurred_at) AS first_at, max(e.occurred_at) AS last_at, min(e.id) AS first_id,
                    max(e.id) AS last_id
             FROM private.alert_events e WHERE e.delivery_id IS NULL
             GROUP BY e.kind, e.venue_id ORDER BY min(e.id)
    LOOP
        SELECT w.opened_at INTO opened FROM private.alert_windows w WHERE w.kind = g.kind AND w.venue_key = g.venue_key;
        window_end := opened + make_interval(secs => p_digest_secs);
        IF opened IS NULL OR g.first_at >= window_end THEN
            -- Quiet until now: the first event goes at once.
            SELECT * INTO first_event FROM private.alert_events WHERE id = g.first_id;
            INSERT INTO private.alert_deliveries (kind, venue_id, digest, events, first_at, last_at, summary)
                VALUES (g.kind, g.venue_id, false, 1, first_event.occurred_at, first_event.occurred_at, first_event.summary)
                RETURNING * INTO made;
            UPDATE private.alert_events SET delivery_id = made.id WHERE id = g.first_id;
            INSERT INTO private.alert_windows (kind, venue_key, opened_at) VALUES (g.kind, g.venue_key, clock_timestamp())
                ON CONFLICT (kind, venue_key) DO UPDATE SET opened_at = EXCLUDED.opened_at;
            RETURN NEXT made;
        ELSIF clock_timestamp() >= window_end THEN
            -- The window is over: everything that waited goes as one digest.
            INSERT INTO private.alert_deliveries (kind, venue_id, digest, events, first_at, last_at, summary)
                VALUES (g.kind, g.venue_id, true, g.n, g.first_at, g.last_at,
                        (SELECT e.summary FROM private.alert_events e WHERE e.id = g.first_id))
                RETURNING * INTO made;
            UPDATE private.alert_events SET delivery_id = made.id
                WHERE delivery_id IS NULL AND kind = g.kind AND venue_id IS NOT DISTINCT FROM g.venue_id
                  AND id <= g.last_id;
            UPDATE private.alert_windows SET opened_at = clock_timestamp() WHERE kind = g.kind AND venue_key = g.venue_key;
            RETURN NEXT made;
        END IF;
    END LOOP;
END $$;

-- Takes up to p_limit due deliveries for p_lease_secs (skipping those another process holds).
CREATE FUNCTION private.claim_alert_deliveries(p_limit integer, p_lease_secs integer) RETURNS SETOF private.alert_deliveries
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    UPDATE private.alert_deliveries d SET locked_until = clock_timestamp() + make_interval(secs => p_lease_secs),
                                          attempts = d.attempts + 1
    WHERE d.id IN (SELECT o.id FROM private.alert_deliveries o
                   WHERE o.delivered_at IS NULL AND o.next_attempt_at <= clock_timestamp()
                     AND (o.locked_until IS NULL OR o.locked_until < clock_timestamp())
                   ORDER BY o.id LIMIT p_limit FOR UPDATE SKIP LOCKED)
    RETURNING d.* $$;

CREATE FUNCTION private.alert_delivered(p_id bigint) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.alert_deliveries SET delivered_at = now(), locked_until = NULL, last_error = NULL WHERE id = p_id $$;

CREATE FUNCTION private.alert_delivery_failed(p_id bigint, p_error text, p_retry_ms integer) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.alert_deliveries SET last_error = left(p_error, 500), locked_until = NULL,
              next_attempt_at = clock_timestamp() + make_interval(secs => p_retry_ms / 1000.0)
          WHERE id = p_id $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.audit_export_due(), private.audit_export_cursor(text),
    private.advance_audit_export(text, bigint), private.platform_audit_batch(bigint, integer) TO venueql_app;
GRANT EXECUTE ON FUNCTION private.raise_alert(text, uuid, text) TO venueql_app, venueql_platform;
GRANT EXECUTE ON FUNCTION private.plan_alerts(integer), private.claim_alert_deliveries(integer, integer),
    private.alert_delivered(bigint), private.alert_delivery_failed(bigint, text, integer) TO venueql_app;
