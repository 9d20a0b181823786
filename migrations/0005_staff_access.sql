-- Staff and API-client management from inside a venue (GraphQL, STAFF_MANAGE /
-- API_CLIENTS_MANAGE): the app role may now add, change and remove memberships of its
-- current venue, and reaches staff identities and clients only through functions that
-- act on the current venue.

GRANT INSERT, DELETE, UPDATE (permissions) ON memberships TO venueql_app;

-- Finds a staff identity by email, or creates it with the given password hash (a new
-- person). Returns the id and whether it was created.
CREATE FUNCTION private.find_or_create_staff(p_email text, p_password_hash text)
    RETURNS TABLE (staff_id uuid, created boolean)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE found uuid;
BEGIN
    IF public.current_venue_id() IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    SELECT s.id INTO found FROM public.staff s WHERE s.email = lower(trim(p_email));
    IF found IS NOT NULL THEN
        RETURN QUERY SELECT found, false;
        RETURN;
    END IF;
    IF p_password_hash IS NULL THEN
        RAISE EXCEPTION 'a new staff member needs a password' USING ERRCODE = '22023';
    END IF;
    INSERT INTO public.staff (email) VALUES (lower(trim(p_email))) RETURNING id INTO found;
    INSERT INTO private.staff_passwords (staff_id, password_hash) VALUES (found, p_password_hash);
    RETURN QUERY SELECT found, true;
END $$;

-- OAuth clients of the current venue (integration and POS).
CREATE FUNCTION private.clients_of_current_venue()
    RETURNS TABLE (id text, kind text, name text, permissions bigint, created_at timestamptz)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.id, c.kind, c.name, c.permissions, c.created_at FROM private.oauth_clients c
          WHERE c.venue_id = public.current_venue_id() AND c.revoked_at IS NULL ORDER BY c.created_at $$;

-- Registers a confidential client at the current venue.
CREATE FUNCTION private.create_venue_client(p_id text, p_kind text, p_name text, p_permissions bigint, p_secret_hash bytea)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    IF p_kind NOT IN ('integration', 'pos') THEN RAISE EXCEPTION 'kind must be integration or pos'; END IF;
    INSERT INTO private.oauth_clients (id, kind, name, venue_id, permissions, secret_hash)
    VALUES (p_id, p_kind, p_name, v, p_permissions, p_secret_hash);
END $$;

-- Revokes a client of the current venue; false when there is none with that id here.
CREATE FUNCTION private.revoke_venue_client(p_id text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH revoked AS (
        UPDATE private.oauth_clients SET revoked_at = now()
        WHERE id = p_id AND venue_id = public.current_venue_id() AND revoked_at IS NULL RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM revoked) $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.find_or_create_staff(text, text), private.clients_of_current_venue(),
    private.create_venue_client(text, text, text, bigint, bytea), private.revoke_venue_client(text)
    TO venueql_app;
