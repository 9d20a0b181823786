-- Diners prove control of their email before shared health data is touched (issue 11):
-- a one-time code mailed to the address, hashed, 10 minutes, five tries. Only a venue
-- where the diner both verified and paid may read, give or withdraw the shared profile;
-- an unverified statement reaches this order's kitchen alert only. Also the retention
-- functions (raw Stripe events, abandoned checkouts, unverified diners).

-- The venue "has" a diner for the consent gate only once they verified there too.
ALTER TABLE private.diner_identities ADD COLUMN verified boolean NOT NULL DEFAULT false;

-- When the diner last proved their email at this venue (NULL: never; such a record is an
-- unverified statement, deleted after the retention period).
ALTER TABLE diners ADD COLUMN verified_at timestamptz;
GRANT UPDATE (verified_at) ON diners TO venueql_app;

-- Whether the checkout's diner details came with a valid proof of the email.
ALTER TABLE checkouts ADD COLUMN diner_verified boolean NOT NULL DEFAULT false;

-- One live code per diner and venue.
CREATE TABLE private.diner_codes (
    identity_hash bytea NOT NULL,
    venue_id      uuid NOT NULL REFERENCES venues (id),
    -- SHA-256 of the 6-digit code.
    code_hash     bytea NOT NULL,
    expires_at    timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    used_at       timestamptz,
    PRIMARY KEY (identity_hash, venue_id)
);
COMMENT ON TABLE private.diner_codes IS 'Private: hashed one-time codes proving a diner controls their email.';

-- A new code for a diner at the current venue (replaces any earlier one).
CREATE FUNCTION private.store_diner_code(p_identity bytea, p_code_hash bytea, p_ttl_secs integer) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    INSERT INTO private.diner_codes (identity_hash, venue_id, code_hash, expires_at)
    VALUES (p_identity, v, p_code_hash, now() + make_interval(secs => p_ttl_secs))
    ON CONFLICT (identity_hash, venue_id) DO UPDATE SET code_hash = EXCLUDED.code_hash,
        expires_at = EXCLUDED.expires_at, attempts = 0, used_at = NULL;
END $$;

-- Checks a code once: every try counts (at most five per code), a right one is used up.
CREATE FUNCTION private.check_diner_code(p_identity bytea, p_code_hash bytea) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE stored bytea;
BEGIN
    UPDATE private.diner_codes SET attempts = attempts + 1
     WHERE identity_hash = p_identity AND venue_id = public.current_venue_id()
       AND used_at IS NULL AND expires_at > now() AND attempts < 5
    RETURNING code_hash INTO stored;
    IF stored IS NULL OR stored <> p_code_hash THEN RETURN false; END IF;
    UPDATE private.diner_codes SET used_at = now()
     WHERE identity_hash = p_identity AND venue_id = public.current_venue_id();
    RETURN true;
END $$;

CREATE OR REPLACE FUNCTION private.venue_has_diner(p_identity bytea) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM private.diner_identities i
                         WHERE i.identity_hash = p_identity AND i.venue_id = public.current_venue_id()
                           AND i.paid AND i.verified) $$;

-- A verified payment by this diner at the current venue. Only a diner who proved their
-- email at this checkout becomes verified here and has their sharing request applied;
-- an unverified one is marked paid and changes no shared profile.
DROP FUNCTION private.diner_paid(bytea, boolean, bytea, bytea);
CREATE FUNCTION private.diner_paid(p_identity bytea, p_verified boolean, p_consent boolean, p_allergens bytea,
                                   p_dietary_notes bytea)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE private.diner_identities SET paid = true, verified = verified OR p_verified
     WHERE identity_hash = p_identity AND venue_id = public.current_venue_id();
    IF NOT p_verified THEN RETURN; END IF;
    IF p_consent AND p_allergens IS NOT NULL THEN
        PERFORM private.share_diner_profile(p_identity, p_allergens, p_dietary_notes);
    ELSIF p_consent = false THEN
        PERFORM private.withdraw_diner_profile(p_identity);
    END IF;
END $$;

-- ───────────────────────────── retention ─────────────────────────────

-- Drops the raw bodies of the current venue's Stripe events received before p_before
-- (they may hold a customer's billing details); the id, type and outcome stay, so a late
-- duplicate is still recognised. Returns how many bodies were dropped.
ALTER TABLE private.stripe_events ALTER COLUMN raw_body DROP NOT NULL;
CREATE FUNCTION private.purge_stripe_event_bodies(p_before timestamptz) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE n integer;
BEGIN
    UPDATE private.stripe_events SET raw_body = NULL
     WHERE venue_id = public.current_venue_id() AND raw_body IS NOT NULL AND received_at < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;

-- Forgets the PaymentIntent routes of the current venue's checkouts being deleted.
CREATE FUNCTION private.forget_payment_intents(p_checkouts uuid[]) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.stripe_payment_intents
          WHERE venue_id = public.current_venue_id() AND checkout_id = ANY (p_checkouts) $$;

GRANT DELETE ON checkouts, checkout_items TO venueql_app;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.store_diner_code(bytea, bytea, integer), private.check_diner_code(bytea, bytea),
    private.diner_paid(bytea, boolean, boolean, bytea, bytea),
    private.purge_stripe_event_bodies(timestamptz), private.forget_payment_intents(uuid[])
    TO venueql_app;

-- Drops the raw bodies of events never routed to any venue (unknown accounts, ignored
-- types) received before p_before: platform-level, no venue scope.
CREATE FUNCTION private.purge_unrouted_stripe_event_bodies(p_before timestamptz) RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE n integer;
BEGIN
    UPDATE private.stripe_events SET raw_body = NULL
     WHERE venue_id IS NULL AND raw_body IS NOT NULL AND received_at < p_before;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END $$;
REVOKE ALL ON FUNCTION private.purge_unrouted_stripe_event_bodies(timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.purge_unrouted_stripe_event_bodies(timestamptz) TO venueql_app;
