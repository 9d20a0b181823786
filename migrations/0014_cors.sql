-- Browser apps on their own origins (issue 12). An SPA client lists the web origins it is
-- served from; only those may call the token endpoint with its client id or the staff
-- API with its tokens. A venue lists the origins of its diner pages in its settings.
-- Venues may register their own SPA clients (bound to the venue: they sign people in to
-- that venue only), with redirect URIs and origins.

-- An origin is `scheme://host[:port]` in the form browsers send: lower case, no path,
-- https (http only for a loopback host); at most 20 per list.
CREATE FUNCTION private.valid_origins(p_origins text[]) RETURNS boolean
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT cardinality(p_origins) <= 20 AND COALESCE(bool_and(
              o ~ '^https://[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?(:[0-9]{1,5})?$'
              OR o ~ '^http://(localhost|127\.0\.0\.1|\[::1\])(:[0-9]{1,5})?$'), true)
          FROM unnest(p_origins) AS o $$;

ALTER TABLE private.oauth_clients
    ADD COLUMN allowed_origins text[] NOT NULL DEFAULT '{}'
        CONSTRAINT oauth_clients_allowed_origins_format CHECK (private.valid_origins(allowed_origins)),
    DROP CONSTRAINT oauth_clients_venue_matches_kind,
    ADD CONSTRAINT oauth_clients_venue_matches_kind CHECK (kind = 'spa' OR venue_id IS NOT NULL),
    ADD CONSTRAINT oauth_clients_origins_only_spa CHECK (kind = 'spa' OR cardinality(allowed_origins) = 0);
CREATE INDEX oauth_clients_allowed_origins_idx ON private.oauth_clients USING gin (allowed_origins)
    WHERE revoked_at IS NULL AND kind = 'spa';
-- Operators (and `venueql dev`) change an SPA client's redirect URIs and origins.
GRANT SELECT (id, kind), UPDATE (redirect_uris, allowed_origins) ON private.oauth_clients TO venueql_platform;

DROP FUNCTION private.oauth_client(text);
CREATE FUNCTION private.oauth_client(p_id text)
    RETURNS TABLE (id text, kind text, name text, venue_id uuid, redirect_uris text[], permissions bigint,
                   confidential boolean, allowed_origins text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.id, c.kind, c.name, c.venue_id, c.redirect_uris, c.permissions, c.secret_hash IS NOT NULL,
                 c.allowed_origins
          FROM private.oauth_clients c WHERE c.id = p_id AND c.revoked_at IS NULL $$;

-- Whether any active SPA client lists the origin (preflights of the staff and token doors,
-- which do not yet know the client).
CREATE FUNCTION private.spa_origin_registered(p_origin text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM private.oauth_clients c
                         WHERE c.kind = 'spa' AND c.revoked_at IS NULL AND c.allowed_origins @> ARRAY[p_origin]) $$;

-- Whether the active client lists the origin.
CREATE FUNCTION private.client_allows_origin(p_client text, p_origin text) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM private.oauth_clients c
                         WHERE c.id = p_client AND c.revoked_at IS NULL AND c.allowed_origins @> ARRAY[p_origin]) $$;

DROP FUNCTION private.clients_of_current_venue();
CREATE FUNCTION private.clients_of_current_venue()
    RETURNS TABLE (id text, kind text, name text, permissions bigint, created_at timestamptz,
                   redirect_uris text[], allowed_origins text[])
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.id, c.kind, c.name, c.permissions, c.created_at, c.redirect_uris, c.allowed_origins
          FROM private.oauth_clients c
          WHERE c.venue_id = public.current_venue_id() AND c.revoked_at IS NULL ORDER BY c.created_at $$;

-- Registers a client at the current venue: a confidential integration or POS client, or a
-- public SPA client (no secret, redirect URIs, origins).
DROP FUNCTION private.create_venue_client(text, text, text, bigint, bytea);
CREATE FUNCTION private.create_venue_client(p_id text, p_kind text, p_name text, p_permissions bigint,
                                            p_secret_hash bytea, p_redirect_uris text[], p_allowed_origins text[])
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    IF p_kind NOT IN ('integration', 'pos', 'spa') THEN RAISE EXCEPTION 'kind must be integration, pos or spa'; END IF;
    INSERT INTO private.oauth_clients (id, kind, name, venue_id, permissions, secret_hash, redirect_uris, allowed_origins)
    VALUES (p_id, p_kind, p_name, v, p_permissions, p_secret_hash, p_redirect_uris, p_allowed_origins);
END $$;

-- Replaces the origins of an active SPA client of the current venue; false when the
-- venue has no such client.
CREATE FUNCTION private.set_venue_client_origins(p_id text, p_origins text[]) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH changed AS (
        UPDATE private.oauth_clients SET allowed_origins = p_origins
         WHERE id = p_id AND venue_id = public.current_venue_id() AND kind = 'spa' AND revoked_at IS NULL
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM changed) $$;

-- The origins of the venue's diner pages (the public endpoint's CORS list).
ALTER TABLE venue_settings
    ADD COLUMN allowed_origins text[] NOT NULL DEFAULT '{}'
        CONSTRAINT venue_settings_allowed_origins_format CHECK (private.valid_origins(allowed_origins));
GRANT INSERT (allowed_origins), UPDATE (allowed_origins) ON venue_settings TO venueql_app;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.oauth_client(text), private.spa_origin_registered(text), private.client_allows_origin(text, text),
    private.clients_of_current_venue(),
    private.create_venue_client(text, text, text, bigint, bytea, text[], text[]),
    private.set_venue_client_origins(text, text[])
    TO venueql_app;
GRANT EXECUTE ON FUNCTION private.valid_origins(text[]) TO venueql_app, venueql_platform;
