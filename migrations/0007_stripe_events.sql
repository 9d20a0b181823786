-- Stripe events as delivered: the authoritative record, keyed by event id (a duplicate
-- delivery is acknowledged without effect), raw body kept. Platform-level until routed to
-- a venue, so private: reached only through private.store_stripe_event.

CREATE TABLE private.stripe_events (
    id           text PRIMARY KEY CONSTRAINT stripe_events_id_format CHECK (id ~ '^evt_[A-Za-z0-9_]+$'),
    -- Which endpoint received it: platform or connect.
    endpoint     text NOT NULL CONSTRAINT stripe_events_endpoint CHECK (endpoint IN ('platform', 'connect')),
    type         text NOT NULL,
    -- The connected account of a Connect event.
    account      text,
    livemode     boolean NOT NULL,
    api_version  text,
    -- When Stripe created the event.
    created      timestamptz NOT NULL,
    -- The request body exactly as signed.
    raw_body     text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    -- Set when the event's effects are applied (in the same transaction).
    processed_at timestamptz,
    venue_id     uuid REFERENCES venues (id)
);
CREATE INDEX stripe_events_unprocessed_idx ON private.stripe_events (received_at) WHERE processed_at IS NULL;
COMMENT ON TABLE private.stripe_events IS 'Private, platform-level: every verified Stripe event, by id.';

-- Stores a verified event; false when its id was stored before (a duplicate delivery).
CREATE FUNCTION private.store_stripe_event(p_id text, p_endpoint text, p_type text, p_account text, p_livemode boolean,
                                           p_api_version text, p_created bigint, p_raw text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH stored AS (
        INSERT INTO private.stripe_events (id, endpoint, type, account, livemode, api_version, created, raw_body)
        VALUES (p_id, p_endpoint, p_type, p_account, p_livemode, p_api_version, to_timestamp(p_created), p_raw)
        ON CONFLICT (id) DO NOTHING RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM stored) $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.store_stripe_event(text, text, text, text, boolean, text, bigint, text) TO venueql_app;
