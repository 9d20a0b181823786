-- Diner data protection (issue 5): diners per venue keyed by an identity hash (HMAC of the
-- normalised email or phone; the identifier itself is never stored), their allergens and
-- dietary notes as AES-256-GCM ciphertexts under per-venue data keys (wrapped by the
-- master key), and one platform-level shared allergen profile per identity that another
-- venue reads only through a function that checks consent.

-- Per-venue data keys, wrapped by a master key (named by its fingerprint). Destroying a
-- key (offboarding) nulls the wrapped bytes: everything encrypted under it is unreadable.
CREATE TABLE venue_data_keys (
    venue_id      uuid NOT NULL REFERENCES venues (id),
    version       integer NOT NULL CONSTRAINT venue_data_keys_version_positive CHECK (version > 0),
    wrapped       bytea,
    master_key_id text NOT NULL,
    state         text NOT NULL DEFAULT 'active'
        CONSTRAINT venue_data_keys_state CHECK (state IN ('active', 'retired', 'destroyed')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    destroyed_at  timestamptz,
    PRIMARY KEY (venue_id, version),
    CONSTRAINT venue_data_keys_destroyed_empty CHECK ((state = 'destroyed') = (wrapped IS NULL))
);
CREATE UNIQUE INDEX venue_data_keys_one_active ON venue_data_keys (venue_id) WHERE state = 'active';
COMMENT ON TABLE venue_data_keys IS 'Tenant: the venue''s data keys, wrapped by the master key.';

CREATE TABLE diners (
    venue_id      uuid NOT NULL REFERENCES venues (id),
    id            uuid NOT NULL DEFAULT gen_random_uuid(),
    -- HMAC-SHA256(IDENTITY_HMAC_KEY, normalised email or phone).
    identity_hash bytea NOT NULL CONSTRAINT diners_identity_hash_length CHECK (length(identity_hash) = 32),
    -- Ciphertexts (crypto::encrypt_field), bound to this venue, row and column.
    allergens     bytea,
    dietary_notes bytea,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, id),
    CONSTRAINT diners_identity_key UNIQUE (venue_id, identity_hash)
);
COMMENT ON TABLE diners IS 'Tenant: diners of the venue; health data only as ciphertext.';

ALTER TABLE checkouts ADD COLUMN diner_id uuid;
-- What the diner asked about sharing at this checkout (NULL: nothing), with the shared
-- profile already sealed under the platform key; applied only once the payment is
-- verified (an unpaid, anonymous checkout changes no shared profile).
ALTER TABLE checkouts ADD COLUMN share_consent boolean;
ALTER TABLE checkouts ADD COLUMN shared_allergens bytea;
ALTER TABLE checkouts ADD COLUMN shared_notes bytea;
ALTER TABLE checkouts ADD CONSTRAINT checkouts_diner_fkey FOREIGN KEY (venue_id, diner_id)
    REFERENCES diners (venue_id, id) ON DELETE SET NULL (diner_id);
ALTER TABLE orders ADD COLUMN diner_id uuid;
ALTER TABLE orders ADD CONSTRAINT orders_diner_fkey FOREIGN KEY (venue_id, diner_id)
    REFERENCES diners (venue_id, id) ON DELETE SET NULL (diner_id);
CREATE INDEX orders_diner_idx ON orders (venue_id, diner_id) WHERE diner_id IS NOT NULL;

CALL private.isolate_by_venue('venue_data_keys');
CALL private.isolate_by_venue('diners');

-- The app creates a venue's first key and re-encrypts rows; the platform role (keys
-- commands, offboarding) rotates, re-wraps and destroys keys.
GRANT SELECT, INSERT ON venue_data_keys TO venueql_app;
GRANT SELECT, INSERT, UPDATE (wrapped, master_key_id, state, destroyed_at) ON venue_data_keys TO venueql_platform;
GRANT SELECT, INSERT, DELETE, UPDATE (allergens, dietary_notes, updated_at) ON diners TO venueql_app;
GRANT SELECT, UPDATE (allergens, dietary_notes, updated_at) ON diners TO venueql_platform;
GRANT SELECT ON checkouts, orders TO venueql_platform;

-- ───────────────────────────── platform level: the shared profile ─────────────────────────────

-- Which venues know which identity (kept by a trigger on diners): the consent gate lets a
-- venue read a shared profile only for a diner it actually has.
CREATE TABLE private.diner_identities (
    venue_id      uuid NOT NULL REFERENCES venues (id),
    identity_hash bytea NOT NULL,
    -- Set when the diner paid an order at the venue (a verified Stripe payment): only
    -- then may the venue read, give or withdraw the shared profile.
    paid          boolean NOT NULL DEFAULT false,
    PRIMARY KEY (identity_hash, venue_id)
);
COMMENT ON TABLE private.diner_identities IS 'Private: identity hash -> venues that have that diner (mirror of diners).';

CREATE FUNCTION private.sync_diner_identity() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM private.diner_identities WHERE venue_id = OLD.venue_id AND identity_hash = OLD.identity_hash;
        RETURN NULL;
    END IF;
    INSERT INTO private.diner_identities (venue_id, identity_hash) VALUES (NEW.venue_id, NEW.identity_hash)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER diners_identity AFTER INSERT OR DELETE ON diners
    FOR EACH ROW EXECUTE FUNCTION private.sync_diner_identity();
ALTER TABLE diners ENABLE ALWAYS TRIGGER diners_identity;

-- Platform data keys (for shared profiles), wrapped by the master key.
CREATE TABLE private.platform_data_keys (
    version       integer PRIMARY KEY CONSTRAINT platform_data_keys_version_positive CHECK (version > 0),
    wrapped       bytea NOT NULL,
    master_key_id text NOT NULL,
    active        boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX platform_data_keys_one_active ON private.platform_data_keys (active) WHERE active;
COMMENT ON TABLE private.platform_data_keys IS 'Private: data keys of platform-level ciphertexts, wrapped by the master key.';

-- One shared allergen profile per identity, present only while the diner consents.
CREATE TABLE private.diner_profiles (
    identity_hash bytea PRIMARY KEY,
    allergens     bytea NOT NULL,
    dietary_notes bytea,
    consented_at  timestamptz NOT NULL DEFAULT now(),
    -- The venue where the diner gave (or last renewed) consent.
    consented_via uuid NOT NULL REFERENCES venues (id)
);
COMMENT ON TABLE private.diner_profiles IS 'Private, platform-level: shared allergen profiles (ciphertext), only while consent stands.';

CREATE FUNCTION private.platform_data_key(p_version integer) RETURNS TABLE (version integer, wrapped bytea, master_key_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT k.version, k.wrapped, k.master_key_id FROM private.platform_data_keys k
          WHERE (p_version IS NULL AND k.active) OR k.version = p_version $$;

CREATE FUNCTION private.platform_data_keys_all() RETURNS TABLE (version integer, wrapped bytea, master_key_id text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT k.version, k.wrapped, k.master_key_id FROM private.platform_data_keys k ORDER BY k.version $$;

-- Adds the first (active) platform key; does nothing when an active one exists.
CREATE FUNCTION private.add_platform_data_key(p_version integer, p_wrapped bytea, p_master_key_id text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.platform_data_keys (version, wrapped, master_key_id)
          SELECT p_version, p_wrapped, p_master_key_id
          WHERE NOT EXISTS (SELECT 1 FROM private.platform_data_keys WHERE active)
          ON CONFLICT DO NOTHING $$;

-- Re-wraps a platform key under a new master key (venueql keys rotate-master).
CREATE FUNCTION private.rewrap_platform_data_key(p_version integer, p_wrapped bytea, p_master_key_id text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.platform_data_keys SET wrapped = p_wrapped, master_key_id = p_master_key_id
          WHERE version = p_version $$;

-- Whether the diner with this identity paid an order at the current venue (the consent
-- gate's test).
CREATE FUNCTION private.venue_has_diner(p_identity bytea) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM private.diner_identities i
                         WHERE i.identity_hash = p_identity AND i.venue_id = public.current_venue_id() AND i.paid) $$;

-- Gives (or renews) consent from the current venue: stores the shared profile. Only a
-- venue that has this diner may.
CREATE FUNCTION private.share_diner_profile(p_identity bytea, p_allergens bytea, p_dietary_notes bytea) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL OR NOT private.venue_has_diner(p_identity) THEN
        RAISE EXCEPTION 'no such diner at this venue' USING ERRCODE = '42501';
    END IF;
    INSERT INTO private.diner_profiles (identity_hash, allergens, dietary_notes, consented_via)
    VALUES (p_identity, p_allergens, p_dietary_notes, v)
    ON CONFLICT (identity_hash) DO UPDATE SET allergens = EXCLUDED.allergens, dietary_notes = EXCLUDED.dietary_notes,
        consented_at = now(), consented_via = EXCLUDED.consented_via;
END $$;

-- Withdraws consent: the shared profile is deleted at once. Only a venue where the diner
-- paid may; returns whether a profile was deleted.
CREATE FUNCTION private.withdraw_diner_profile(p_identity bytea) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    IF NOT private.venue_has_diner(p_identity) THEN
        RETURN false;
    END IF;
    DELETE FROM private.diner_profiles WHERE identity_hash = p_identity;
    RETURN FOUND;
END $$;

-- A verified payment by this diner at the current venue: marks them paid here, then
-- applies what they asked about sharing at that checkout (true: share the sealed
-- profile; false: withdraw; NULL: nothing). Called by the payment_intent.succeeded handler.
CREATE FUNCTION private.diner_paid(p_identity bytea, p_consent boolean, p_allergens bytea, p_dietary_notes bytea)
    RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    UPDATE private.diner_identities SET paid = true
     WHERE identity_hash = p_identity AND venue_id = public.current_venue_id();
    IF p_consent AND p_allergens IS NOT NULL THEN
        PERFORM private.share_diner_profile(p_identity, p_allergens, p_dietary_notes);
    ELSIF p_consent = false THEN
        PERFORM private.withdraw_diner_profile(p_identity);
    END IF;
END $$;

-- The consent gate: the shared profile of an identity, only while consent stands and only
-- to a venue that has this diner.
CREATE FUNCTION private.shared_diner_profile(p_identity bytea) RETURNS TABLE (allergens bytea, dietary_notes bytea)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT p.allergens, p.dietary_notes FROM private.diner_profiles p
          WHERE p.identity_hash = p_identity AND private.venue_has_diner(p_identity) $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.platform_data_key(integer),
    private.platform_data_keys_all(),
    private.add_platform_data_key(integer, bytea, text),
    private.diner_paid(bytea, boolean, bytea, bytea),
    private.withdraw_diner_profile(bytea),
    private.shared_diner_profile(bytea)
    TO venueql_app;
GRANT EXECUTE ON FUNCTION private.platform_data_keys_all(), private.rewrap_platform_data_key(integer, bytea, text)
    TO venueql_platform;
