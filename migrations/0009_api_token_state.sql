-- One round trip to verify an API token: the token's permissions and revocation are
-- mirrored (by a trigger, in the same transaction as every change) next to its hash in
-- the private schema, so verification is one narrow function call instead of a lookup
-- followed by a venue-scoped read. The venue's own api_tokens row stays authoritative.

CREATE TABLE private.api_token_state (
    token_id    uuid PRIMARY KEY,
    venue_id    uuid NOT NULL REFERENCES venues (id),
    permissions bigint NOT NULL,
    revoked_at  timestamptz
);
COMMENT ON TABLE private.api_token_state IS 'Private: mirror of api_tokens permissions and revocation, kept by a trigger.';

CREATE FUNCTION private.sync_api_token_state() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    INSERT INTO private.api_token_state (token_id, venue_id, permissions, revoked_at)
    VALUES (NEW.id, NEW.venue_id, NEW.permissions, NEW.revoked_at)
    ON CONFLICT (token_id) DO UPDATE SET permissions = EXCLUDED.permissions, revoked_at = EXCLUDED.revoked_at;
    RETURN NULL;
END $$;
CREATE TRIGGER api_tokens_state AFTER INSERT OR UPDATE ON api_tokens
    FOR EACH ROW EXECUTE FUNCTION private.sync_api_token_state();
ALTER TABLE api_tokens ENABLE ALWAYS TRIGGER api_tokens_state;

-- Tokens issued before this migration (the owner reads past row-level security once).
ALTER TABLE api_tokens NO FORCE ROW LEVEL SECURITY;
INSERT INTO private.api_token_state (token_id, venue_id, permissions, revoked_at)
SELECT id, venue_id, permissions, revoked_at FROM api_tokens ON CONFLICT (token_id) DO NOTHING;
ALTER TABLE api_tokens FORCE ROW LEVEL SECURITY;

-- A live token's venue, id and permissions; nothing for unknown or revoked tokens.
CREATE FUNCTION private.verify_api_token(p_token_hash bytea)
    RETURNS TABLE (venue_id uuid, token_id uuid, permissions bigint)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT h.venue_id, h.token_id, s.permissions
          FROM private.api_token_hashes h
          JOIN private.api_token_state s ON s.token_id = h.token_id AND s.venue_id = h.venue_id
          WHERE length(p_token_hash) = 32 AND h.token_hash = p_token_hash AND s.revoked_at IS NULL $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.verify_api_token(bytea) TO venueql_app;
