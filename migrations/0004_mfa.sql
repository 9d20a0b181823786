-- Multi-factor authentication: TOTP secrets and single-use recovery codes (private),
-- and per-venue settings, starting with "staff holding elevated permissions must use
-- MFA" (tenant).

CREATE TABLE private.staff_totp (
    staff_id     uuid PRIMARY KEY REFERENCES staff (id) ON DELETE CASCADE,
    -- RFC 6238 shared secret (160 bits).
    secret       bytea NOT NULL CONSTRAINT staff_totp_secret_length CHECK (length(secret) = 20),
    -- NULL until the person proved they can generate codes.
    confirmed_at timestamptz,
    -- Last accepted time step: a code is accepted once per step (replay protection).
    last_step    bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE private.staff_totp IS 'Private: TOTP secrets of staff members.';

CREATE TABLE private.staff_recovery_codes (
    staff_id  uuid NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    code_hash bytea NOT NULL,
    used_at   timestamptz,
    PRIMARY KEY (staff_id, code_hash)
);
COMMENT ON TABLE private.staff_recovery_codes IS 'Private: SHA-256 of single-use MFA recovery codes.';

CREATE TABLE venue_settings (
    venue_id                 uuid PRIMARY KEY REFERENCES venues (id),
    -- Staff holding STAFF_MANAGE, PAYMENTS_MANAGE, VENUE_SETTINGS, API_CLIENTS_MANAGE or
    -- ORDERS_REFUND get no token for this venue without TOTP.
    require_mfa_for_elevated boolean NOT NULL DEFAULT false,
    updated_at               timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE venue_settings IS 'Tenant: per-venue settings (one row per venue, absent = defaults).';
ALTER TABLE venue_settings ENABLE ROW LEVEL SECURITY;
ALTER TABLE venue_settings FORCE ROW LEVEL SECURITY;
CREATE POLICY venue_isolation ON venue_settings AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform
    USING (venue_id = (SELECT public.current_venue_id()))
    WITH CHECK (venue_id = (SELECT public.current_venue_id()));
GRANT SELECT, INSERT, UPDATE (require_mfa_for_elevated, updated_at) ON venue_settings TO venueql_app;

CREATE FUNCTION private.totp_state(p_staff uuid) RETURNS TABLE (secret bytea, confirmed boolean, last_step bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT t.secret, t.confirmed_at IS NOT NULL, t.last_step FROM private.staff_totp t WHERE t.staff_id = p_staff $$;

-- Starts (or restarts) an enrolment; refused while a confirmed secret exists.
CREATE FUNCTION private.begin_totp(p_staff uuid, p_secret bytea) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH upserted AS (
        INSERT INTO private.staff_totp (staff_id, secret) VALUES (p_staff, p_secret)
        ON CONFLICT (staff_id) DO UPDATE SET secret = EXCLUDED.secret, last_step = 0, created_at = now()
            WHERE private.staff_totp.confirmed_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM upserted) $$;

-- Accepts a verified code's time step once (and confirms the enrolment when asked).
CREATE FUNCTION private.accept_totp_step(p_staff uuid, p_step bigint, p_confirm boolean) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH accepted AS (
        UPDATE private.staff_totp SET last_step = p_step,
            confirmed_at = CASE WHEN p_confirm THEN COALESCE(confirmed_at, now()) ELSE confirmed_at END
        WHERE staff_id = p_staff AND last_step < p_step AND (p_confirm OR confirmed_at IS NOT NULL)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM accepted) $$;

CREATE FUNCTION private.disable_totp(p_staff uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.staff_recovery_codes WHERE staff_id = p_staff;
          DELETE FROM private.staff_totp WHERE staff_id = p_staff $$;

CREATE FUNCTION private.replace_recovery_codes(p_staff uuid, p_hashes bytea[]) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.staff_recovery_codes WHERE staff_id = p_staff;
          INSERT INTO private.staff_recovery_codes (staff_id, code_hash) SELECT p_staff, h FROM unnest(p_hashes) h $$;

-- Uses a recovery code once.
CREATE FUNCTION private.use_recovery_code(p_staff uuid, p_hash bytea) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH used AS (
        UPDATE private.staff_recovery_codes SET used_at = now()
        WHERE staff_id = p_staff AND code_hash = p_hash AND used_at IS NULL RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM used) $$;

-- A person's email, for their own authenticator label during login.
CREATE FUNCTION private.staff_email(p_staff uuid) RETURNS TABLE (email text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT s.email FROM public.staff s WHERE s.id = p_staff $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.totp_state(uuid), private.begin_totp(uuid, bytea), private.accept_totp_step(uuid, bigint, boolean),
    private.disable_totp(uuid), private.replace_recovery_codes(uuid, bytea[]), private.use_recovery_code(uuid, bytea),
    private.staff_email(uuid)
    TO venueql_app;
