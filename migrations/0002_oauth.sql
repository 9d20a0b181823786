-- OAuth 2 authorization server: clients, grants (sessions), tokens, authorization codes,
-- and the staff -> venues index the login page needs. Secrets (client secret hashes,
-- token and code hashes) live in the private schema and are reached only through the
-- narrow SECURITY DEFINER functions below.

-- Registered clients. Platform-level: SPA clients serve any venue their person belongs
-- to; integration and POS clients belong to one venue.
CREATE TABLE private.oauth_clients (
    id            text PRIMARY KEY CONSTRAINT oauth_clients_id_format CHECK (id ~ '^vqc_[A-Za-z0-9_-]{16,64}$'),
    kind          text NOT NULL CONSTRAINT oauth_clients_kind CHECK (kind IN ('spa', 'integration', 'pos')),
    name          text NOT NULL CONSTRAINT oauth_clients_name_length CHECK (length(name) BETWEEN 1 AND 200),
    venue_id      uuid REFERENCES venues (id),
    redirect_uris text[] NOT NULL DEFAULT '{}',
    -- Integration clients: the permissions of their client-credentials tokens.
    permissions   bigint NOT NULL DEFAULT 0,
    -- SHA-256 of the client secret; NULL for public (SPA) clients.
    secret_hash   bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CONSTRAINT oauth_clients_venue_matches_kind CHECK ((kind = 'spa') = (venue_id IS NULL)),
    CONSTRAINT oauth_clients_secret_matches_kind CHECK ((kind = 'spa') = (secret_hash IS NULL)),
    CONSTRAINT oauth_clients_spa_has_redirect CHECK (kind <> 'spa' OR cardinality(redirect_uris) > 0)
);
COMMENT ON TABLE private.oauth_clients IS 'Private, platform-level: OAuth clients with their secret hashes.';
GRANT INSERT ON private.oauth_clients TO venueql_platform;

-- Which venues each staff member belongs to; maintained from memberships by trigger so
-- the login page can offer the venue choice without reading across tenants.
CREATE TABLE private.staff_venues (
    staff_id uuid NOT NULL REFERENCES staff (id),
    venue_id uuid NOT NULL REFERENCES venues (id),
    PRIMARY KEY (staff_id, venue_id)
);
COMMENT ON TABLE private.staff_venues IS 'Private index of memberships: staff -> venues, for the login venue choice.';

CREATE FUNCTION private.index_staff_venue() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO private.staff_venues (staff_id, venue_id) VALUES (NEW.staff_id, NEW.venue_id) ON CONFLICT DO NOTHING;
    ELSIF TG_OP = 'DELETE' THEN
        DELETE FROM private.staff_venues WHERE staff_id = OLD.staff_id AND venue_id = OLD.venue_id;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER memberships_index_staff_venue AFTER INSERT OR DELETE ON memberships
    FOR EACH ROW EXECUTE FUNCTION private.index_staff_venue();
INSERT INTO private.staff_venues (staff_id, venue_id)
    SELECT m.staff_id, m.venue_id FROM memberships m ON CONFLICT DO NOTHING;

-- A grant is one authorisation (a "session"): a person or client at one venue through
-- one client. Its tokens die with it.
CREATE TABLE oauth_grants (
    venue_id       uuid NOT NULL REFERENCES venues (id),
    id             uuid NOT NULL DEFAULT gen_random_uuid(),
    client_id      text NOT NULL REFERENCES private.oauth_clients (id),
    -- The person; NULL for client-credentials grants.
    staff_id       uuid REFERENCES staff (id),
    grant_type     text NOT NULL CONSTRAINT oauth_grants_type CHECK (grant_type IN ('authorization_code', 'client_credentials', 'pin')),
    -- Upper bound of the grant's permissions (a person's are also capped by their membership).
    permissions    bigint NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_used_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at     timestamptz,
    revoked_reason text,
    PRIMARY KEY (venue_id, id)
);
COMMENT ON TABLE oauth_grants IS 'Tenant: OAuth grants (sessions) at a venue; revoking one kills its tokens.';
ALTER TABLE oauth_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE oauth_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY venue_isolation ON oauth_grants AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform
    USING (venue_id = (SELECT public.current_venue_id()))
    WITH CHECK (venue_id = (SELECT public.current_venue_id()));
GRANT SELECT, INSERT, UPDATE (revoked_at, revoked_reason, last_used_at) ON oauth_grants TO venueql_app;
GRANT SELECT, UPDATE (revoked_at, revoked_reason) ON oauth_grants TO venueql_platform;

-- Access and refresh tokens, by SHA-256.
CREATE TABLE private.oauth_tokens (
    token_hash bytea PRIMARY KEY CONSTRAINT oauth_tokens_hash_length CHECK (length(token_hash) = 32),
    venue_id   uuid NOT NULL,
    grant_id   uuid NOT NULL,
    kind       text NOT NULL CONSTRAINT oauth_tokens_kind CHECK (kind IN ('access', 'refresh')),
    issued_at  timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    -- Refresh tokens: when it was exchanged (rotation); a second use is reuse.
    used_at    timestamptz,
    revoked_at timestamptz,
    FOREIGN KEY (venue_id, grant_id) REFERENCES oauth_grants (venue_id, id)
);
COMMENT ON TABLE private.oauth_tokens IS 'Private: hashes of OAuth access and refresh tokens.';

-- Authorization codes (single use, short-lived), by SHA-256.
CREATE TABLE private.oauth_codes (
    code_hash      bytea PRIMARY KEY CONSTRAINT oauth_codes_hash_length CHECK (length(code_hash) = 32),
    client_id      text NOT NULL REFERENCES private.oauth_clients (id),
    staff_id       uuid NOT NULL REFERENCES staff (id),
    venue_id       uuid NOT NULL REFERENCES venues (id),
    redirect_uri   text NOT NULL,
    code_challenge text NOT NULL,
    expires_at     timestamptz NOT NULL,
    used_at        timestamptz,
    -- The grant the code was exchanged for (revoked if the code is replayed).
    grant_id       uuid
);
COMMENT ON TABLE private.oauth_codes IS 'Private: hashes of authorization codes.';

-- ───────────── narrow doors ─────────────

CREATE FUNCTION private.oauth_client(p_id text)
    RETURNS TABLE (id text, kind text, name text, venue_id uuid, redirect_uris text[], permissions bigint, confidential boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.id, c.kind, c.name, c.venue_id, c.redirect_uris, c.permissions, c.secret_hash IS NOT NULL
          FROM private.oauth_clients c WHERE c.id = p_id AND c.revoked_at IS NULL $$;

-- True when the client is confidential, active, and the secret's hash matches.
CREATE FUNCTION private.authenticate_oauth_client(p_id text, p_secret_hash bytea) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM private.oauth_clients c
          WHERE c.id = p_id AND c.revoked_at IS NULL AND c.secret_hash IS NOT NULL AND c.secret_hash = p_secret_hash) $$;

-- The password hash of a staff member, by normalised email (verified by the caller).
CREATE FUNCTION private.staff_login(p_email text) RETURNS TABLE (staff_id uuid, password_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT s.id, p.password_hash FROM public.staff s JOIN private.staff_passwords p ON p.staff_id = s.id
          WHERE s.email = lower(trim(p_email)) $$;

-- The venues a staff member belongs to (for the login venue choice).
CREATE FUNCTION private.venues_of_staff(p_staff uuid) RETURNS TABLE (venue_id uuid, slug text, name text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT v.id, v.slug, v.name FROM private.staff_venues sv JOIN public.venues v ON v.id = sv.venue_id
          WHERE sv.staff_id = p_staff ORDER BY v.name $$;

-- Staff members of the caller's current venue (identity only; permissions are read from
-- memberships under row-level security).
CREATE FUNCTION public.staff_of_current_venue() RETURNS TABLE (id uuid, email text, display_name text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT s.id, s.email, s.display_name FROM public.staff s
          JOIN private.staff_venues sv ON sv.staff_id = s.id AND sv.venue_id = public.current_venue_id()
          ORDER BY s.email $$;

CREATE FUNCTION private.store_oauth_code(p_hash bytea, p_client text, p_staff uuid, p_redirect text, p_challenge text, p_ttl_secs integer)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    IF NOT EXISTS (SELECT 1 FROM private.staff_venues WHERE staff_id = p_staff AND venue_id = v) THEN
        RAISE EXCEPTION 'staff member does not belong to this venue';
    END IF;
    INSERT INTO private.oauth_codes (code_hash, client_id, staff_id, venue_id, redirect_uri, code_challenge, expires_at)
    VALUES (p_hash, p_client, p_staff, v, p_redirect, p_challenge, now() + make_interval(secs => p_ttl_secs));
END $$;

-- Reads a code without using it, so a request with a wrong verifier or client cannot
-- burn someone else's code.
CREATE FUNCTION private.peek_oauth_code(p_hash bytea)
    RETURNS TABLE (client_id text, staff_id uuid, venue_id uuid, redirect_uri text, code_challenge text,
                   expired boolean, used boolean, grant_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.client_id, c.staff_id, c.venue_id, c.redirect_uri, c.code_challenge, c.expires_at < now(),
                 c.used_at IS NOT NULL, c.grant_id
          FROM private.oauth_codes c WHERE c.code_hash = p_hash $$;

-- Uses a code; true for exactly one caller, however many race.
CREATE FUNCTION private.redeem_oauth_code(p_hash bytea) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH used AS (
        UPDATE private.oauth_codes c SET used_at = now()
        WHERE c.code_hash = p_hash AND c.used_at IS NULL AND c.expires_at >= now()
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM used) $$;

CREATE FUNCTION private.attach_code_grant(p_hash bytea, p_grant uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.oauth_codes SET grant_id = p_grant WHERE code_hash = p_hash AND grant_id IS NULL $$;

-- Stores a token of a grant at the caller's current venue.
CREATE FUNCTION private.store_oauth_token(p_hash bytea, p_grant uuid, p_kind text, p_ttl_secs integer) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    INSERT INTO private.oauth_tokens (token_hash, venue_id, grant_id, kind, expires_at)
    VALUES (p_hash, v, p_grant, p_kind, now() + make_interval(secs => p_ttl_secs));
END $$;

CREATE FUNCTION private.lookup_oauth_token(p_hash bytea)
    RETURNS TABLE (venue_id uuid, grant_id uuid, kind text, issued_at timestamptz, expires_at timestamptz,
                   live boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT t.venue_id, t.grant_id, t.kind, t.issued_at, t.expires_at,
                 t.expires_at > now() AND t.revoked_at IS NULL AND (t.kind = 'access' OR t.used_at IS NULL)
          FROM private.oauth_tokens t WHERE t.token_hash = p_hash $$;

-- Rotates a refresh token: first_use is false when it had been used before (reuse).
CREATE FUNCTION private.use_refresh_token(p_hash bytea)
    RETURNS TABLE (venue_id uuid, grant_id uuid, expired boolean, first_use boolean)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH used AS (
        UPDATE private.oauth_tokens t SET used_at = now()
        WHERE t.token_hash = p_hash AND t.kind = 'refresh' AND t.used_at IS NULL AND t.revoked_at IS NULL
        RETURNING t.token_hash)
    SELECT t.venue_id, t.grant_id, t.expires_at < now(), EXISTS (SELECT 1 FROM used)
    FROM private.oauth_tokens t WHERE t.token_hash = p_hash AND t.kind = 'refresh' $$;

CREATE FUNCTION private.revoke_oauth_token(p_hash bytea) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.oauth_tokens SET revoked_at = now() WHERE token_hash = p_hash AND revoked_at IS NULL $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
REVOKE ALL ON FUNCTION public.staff_of_current_venue() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.oauth_client(text), private.authenticate_oauth_client(text, bytea), private.staff_login(text),
    private.venues_of_staff(uuid), private.store_oauth_code(bytea, text, uuid, text, text, integer),
    private.peek_oauth_code(bytea), private.redeem_oauth_code(bytea), private.attach_code_grant(bytea, uuid),
    private.store_oauth_token(bytea, uuid, text, integer), private.lookup_oauth_token(bytea),
    private.use_refresh_token(bytea), private.revoke_oauth_token(bytea), public.staff_of_current_venue()
    TO venueql_app;
