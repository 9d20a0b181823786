-- Issue 19: what hostile requests taught.

-- ───────────────────────────── PIN authority ─────────────────────────────

-- A PIN never yields a bit its setter did not hold: a PIN set by another member carries
-- the setter's permissions at that moment as its cap (NULL: the member set their own, and
-- their membership is the only cap). Without it, a manager's PIN for a cashier became a
-- credential for whatever the owner later granted the cashier.
ALTER TABLE private.staff_pins ADD COLUMN authority bigint;
COMMENT ON COLUMN private.staff_pins.authority IS
    'The most the PIN may yield: the permissions of the member who set it (NULL: set by the member themself).';

-- PINs set before this migration: who set them is unknown, so each is capped at what the
-- member holds now (a setter had to hold all of it). The owner reads past row-level
-- security once.
ALTER TABLE memberships NO FORCE ROW LEVEL SECURITY;
UPDATE private.staff_pins p SET authority = m.permissions
  FROM memberships m WHERE m.venue_id = p.venue_id AND m.staff_id = p.staff_id;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;

DROP FUNCTION private.set_staff_pin(uuid, text);
CREATE FUNCTION private.set_staff_pin(p_staff uuid, p_hash text, p_authority bigint) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH saved AS (
        INSERT INTO private.staff_pins (venue_id, staff_id, pin_hash, authority)
        SELECT sv.venue_id, sv.staff_id, p_hash, p_authority FROM private.staff_venues sv
        WHERE sv.staff_id = p_staff AND sv.venue_id = public.current_venue_id()
        ON CONFLICT (venue_id, staff_id)
            DO UPDATE SET pin_hash = EXCLUDED.pin_hash, authority = EXCLUDED.authority, updated_at = now()
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM saved) $$;

DROP FUNCTION private.staff_pin(text);
CREATE FUNCTION private.staff_pin(p_email text) RETURNS TABLE (staff_id uuid, pin_hash text, authority bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT p.staff_id, p.pin_hash, p.authority FROM private.staff_pins p JOIN public.staff s ON s.id = p.staff_id
          WHERE p.venue_id = public.current_venue_id() AND s.email = lower(trim(p_email)) $$;

REVOKE ALL ON FUNCTION private.set_staff_pin(uuid, text, bigint), private.staff_pin(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.set_staff_pin(uuid, text, bigint), private.staff_pin(text) TO venueql_app;

-- ───────────────────────────── Stripe events venueql cannot read ─────────────────────────────

-- A verified event whose object does not have the shape venueql reads is never
-- acknowledged as handled: its effects roll back (nothing stored in stripe_events, so
-- Stripe's retry or `venueql stripe replay` applies it once the reader is fixed), the
-- webhook is answered 500, and it is kept here for the operator with a critical alert.
CREATE TABLE private.stripe_unreadable_events (
    id            text PRIMARY KEY CONSTRAINT stripe_unreadable_events_id_format CHECK (id ~ '^evt_[A-Za-z0-9_]+$'),
    endpoint      text NOT NULL CONSTRAINT stripe_unreadable_events_endpoint CHECK (endpoint IN ('platform', 'connect')),
    type          text NOT NULL,
    -- What did not fit (serde's words: a field name and the expected type).
    reason        text NOT NULL,
    -- The request body exactly as signed (removed once the event is applied).
    raw_body      text NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    deliveries    integer NOT NULL DEFAULT 1
);
COMMENT ON TABLE private.stripe_unreadable_events IS
    'Private, platform-level: verified Stripe events venueql could not read, kept until applied.';

-- Records a delivery of an event that could not be read; true on its first delivery.
CREATE FUNCTION private.record_unreadable_stripe_event(p_id text, p_endpoint text, p_type text, p_reason text,
                                                       p_raw text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    INSERT INTO private.stripe_unreadable_events AS u (id, endpoint, type, reason, raw_body)
    VALUES (p_id, p_endpoint, p_type, left(p_reason, 1000), p_raw)
    ON CONFLICT (id) DO UPDATE SET deliveries = u.deliveries + 1, last_seen_at = now(), reason = EXCLUDED.reason
    RETURNING deliveries = 1 $$;

-- The event was applied after all (a fixed reader, Stripe's retry or a replay).
CREATE FUNCTION private.forget_unreadable_stripe_event(p_id text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.stripe_unreadable_events WHERE id = p_id $$;

REVOKE ALL ON FUNCTION private.record_unreadable_stripe_event(text, text, text, text, text),
    private.forget_unreadable_stripe_event(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.record_unreadable_stripe_event(text, text, text, text, text),
    private.forget_unreadable_stripe_event(text) TO venueql_app;

ALTER TABLE private.alert_events DROP CONSTRAINT alert_events_kind_known;
ALTER TABLE private.alert_events ADD CONSTRAINT alert_events_kind_known CHECK (kind IN (
    'refresh_token_reuse', 'lockout', 'cross_venue_refused', 'elevated_grant',
    'signature_failure_burst', 'paid_without_order', 'payment_mismatch', 'dispute',
    'key_rotation', 'venue_offboarded', 'large_refund', 'stripe_event_unreadable'));
