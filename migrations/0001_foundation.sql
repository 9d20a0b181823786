-- venueql foundation: platform tables, tenant tables with forced row-level security,
-- the private schema for secrets, and the append-only, hash-chained audit log.
--
-- Runs as the owner role (DATABASE_OWNER_URL). The group roles venueql_app (the server)
-- and venueql_platform (explicit cross-tenant work) are cluster-level objects created by
-- `venueql db init` before this runs. Nothing is granted to PUBLIC; every privilege the
-- app role holds is granted below, table by table, and the catalogue test in
-- tests/api/catalogue.rs lists each one.

REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO venueql_app, venueql_platform;
ALTER DEFAULT PRIVILEGES REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
GRANT SELECT ON _sqlx_migrations TO venueql_app;

-- The private schema holds secrets (password hashes, token hashes). Neither the app nor
-- the platform role may read it; both reach it only through the narrow SECURITY DEFINER
-- functions defined here.
CREATE SCHEMA private;
REVOKE ALL ON SCHEMA private FROM PUBLIC;
COMMENT ON SCHEMA private IS 'Secrets; reachable only through SECURITY DEFINER functions.';

-- The venue the current transaction is scoped to, set by the venue-scoped transaction
-- with set_config('venueql.venue_id', id, true). A pooled connection that once held the
-- setting reports '' rather than NULL afterwards, so '' must mean "no venue" too.
CREATE FUNCTION public.current_venue_id() RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
    AS $$ SELECT NULLIF(current_setting('venueql.venue_id', true), '')::uuid $$;
REVOKE ALL ON FUNCTION public.current_venue_id() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.current_venue_id() TO venueql_app, venueql_platform;

-- ───────────────────────────── platform-level tables ─────────────────────────────

-- A venue is a tenant. Slug and name are public (the diner page shows them).
CREATE TABLE venues (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    slug       text NOT NULL UNIQUE
               CONSTRAINT venues_slug_format CHECK (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    name       text NOT NULL CONSTRAINT venues_name_length CHECK (length(name) BETWEEN 1 AND 200),
    -- ISO 4217 currency every price at this venue is in.
    currency   text NOT NULL CONSTRAINT venues_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    created_at timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE venues IS 'Platform-level: one row per tenant. Readable by the app role for slug resolution.';
GRANT SELECT (id, slug, name, currency) ON venues TO venueql_app;
GRANT SELECT, INSERT ON venues TO venueql_platform;

-- A person who may work at venues. Identity is platform-level; what they may do at a
-- venue lives in memberships.
CREATE TABLE staff (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email        text NOT NULL CONSTRAINT staff_email_lower CHECK (email = lower(email) AND email LIKE '%_@_%'),
    display_name text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT staff_email_key UNIQUE (email)
);
COMMENT ON TABLE staff IS 'Platform-level: staff identities. Not readable by the app role.';
GRANT SELECT, INSERT ON staff TO venueql_platform;

CREATE TABLE private.staff_passwords (
    staff_id      uuid PRIMARY KEY REFERENCES staff (id) ON DELETE CASCADE,
    -- Argon2id PHC string.
    password_hash text NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE private.staff_passwords IS 'Private: password hashes; written only by private.set_staff_password.';

-- Append-only record of every use of the cross-tenant door (tenancy::CrossTenantDoor).
CREATE TABLE platform_audit_events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,
    reason      text NOT NULL CONSTRAINT platform_audit_reason_present CHECK (length(reason) > 0),
    venue_id    uuid REFERENCES venues (id)
);
COMMENT ON TABLE platform_audit_events IS 'Platform-level, append-only: who opened the cross-tenant door and why.';
GRANT SELECT, INSERT ON platform_audit_events TO venueql_platform;

-- ───────────────────────────── tenant tables ─────────────────────────────
-- Every tenant table: venue_id leads the primary key, foreign keys between tenant tables
-- include venue_id, RLS is enabled and forced, and the one policy compares venue_id with
-- current_venue_id() (NULL when unset or '', so nothing matches).

-- What a staff member may do at one venue: a 64-bit permission set (auth::Permissions).
CREATE TABLE memberships (
    venue_id    uuid NOT NULL REFERENCES venues (id),
    staff_id    uuid NOT NULL REFERENCES staff (id),
    permissions bigint NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, staff_id)
);
COMMENT ON TABLE memberships IS 'Tenant: staff member x venue with permission bits.';

-- Venue API tokens (integration bearer tokens). The token itself is never stored; its
-- SHA-256 lives in private.api_token_hashes.
CREATE TABLE api_tokens (
    venue_id    uuid NOT NULL REFERENCES venues (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    name        text NOT NULL CONSTRAINT api_tokens_name_length CHECK (length(name) BETWEEN 1 AND 200),
    permissions bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    PRIMARY KEY (venue_id, id)
);
COMMENT ON TABLE api_tokens IS 'Tenant: venue API tokens (metadata only; hashes are private).';

CREATE TABLE private.api_token_hashes (
    token_hash bytea PRIMARY KEY CONSTRAINT api_token_hash_length CHECK (length(token_hash) = 32),
    venue_id   uuid NOT NULL,
    token_id   uuid NOT NULL UNIQUE,
    FOREIGN KEY (venue_id, token_id) REFERENCES api_tokens (venue_id, id)
);
COMMENT ON TABLE private.api_token_hashes IS 'Private: SHA-256 of each API token -> its venue and id.';

CREATE TABLE menu_categories (
    venue_id   uuid NOT NULL REFERENCES venues (id),
    id         uuid NOT NULL DEFAULT gen_random_uuid(),
    name       text NOT NULL CONSTRAINT menu_categories_name_length CHECK (length(name) BETWEEN 1 AND 200),
    -- Display order within the venue's menu, ascending.
    position   integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, id),
    CONSTRAINT menu_categories_name_key UNIQUE (venue_id, name)
);
COMMENT ON TABLE menu_categories IS 'Tenant: sections of a venue menu.';

CREATE TABLE menu_items (
    venue_id    uuid NOT NULL,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    category_id uuid NOT NULL,
    name        text NOT NULL CONSTRAINT menu_items_name_length CHECK (length(name) BETWEEN 1 AND 200),
    description text NOT NULL DEFAULT '' CONSTRAINT menu_items_description_length CHECK (length(description) <= 2000),
    -- Integer minor units (cents) of `currency`; never a float.
    price_minor bigint NOT NULL CONSTRAINT menu_items_price_range CHECK (price_minor BETWEEN 0 AND 100000000),
    currency    text NOT NULL CONSTRAINT menu_items_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    -- Declared allergens: a subset of the 14 EU-declared allergens (menu::Allergen).
    allergens   text[] NOT NULL DEFAULT '{}' CONSTRAINT menu_items_allergens_known CHECK (allergens <@ ARRAY[
        'CELERY','CEREALS_CONTAINING_GLUTEN','CRUSTACEANS','EGGS','FISH','LUPIN','MILK',
        'MOLLUSCS','MUSTARD','TREE_NUTS','PEANUTS','SESAME','SOYBEANS','SULPHITES']::text[]),
    available   boolean NOT NULL DEFAULT true,
    position    integer NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    -- Full-text search document ('simple' config: menus are multilingual).
    search      tsvector GENERATED ALWAYS AS (to_tsvector('simple', name || ' ' || description)) STORED,
    PRIMARY KEY (venue_id, id),
    CONSTRAINT menu_items_category_fkey FOREIGN KEY (venue_id, category_id)
        REFERENCES menu_categories (venue_id, id)
);
COMMENT ON TABLE menu_items IS 'Tenant: dishes and drinks with price, allergens and availability.';
CREATE INDEX menu_items_category_idx ON menu_items (venue_id, category_id, position);
CREATE INDEX menu_items_search_idx ON menu_items USING gin (search);

-- The audit log: append-only, tenant-scoped for reading, one hash chain per venue.
CREATE TABLE audit_events (
    venue_id    uuid NOT NULL REFERENCES venues (id),
    -- Position in the venue's chain, 1-based, assigned by the audit_chain trigger.
    seq         bigint NOT NULL,
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    occurred_at timestamptz NOT NULL DEFAULT date_trunc('milliseconds', clock_timestamp()),
    actor       text NOT NULL,
    action      text NOT NULL,
    target_type text,
    target_id   text,
    before      jsonb,
    after       jsonb,
    request_id  text,
    ip          inet,
    -- sha256(prev_hash || canonical row text); genesis prev_hash is 32 zero bytes.
    prev_hash   bytea NOT NULL,
    row_hash    bytea NOT NULL,
    PRIMARY KEY (venue_id, seq)
);
COMMENT ON TABLE audit_events IS 'Tenant, append-only: who did what at which venue; hash-chained per venue.';

-- ───────────────────────────── row-level security ─────────────────────────────

DO $$
DECLARE t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['memberships','api_tokens','menu_categories','menu_items','audit_events'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY venue_isolation ON %I AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform '
            'USING (venue_id = (SELECT public.current_venue_id())) '
            'WITH CHECK (venue_id = (SELECT public.current_venue_id()))', t);
    END LOOP;
END $$;

GRANT SELECT ON memberships TO venueql_app;
GRANT SELECT, INSERT, UPDATE (permissions) ON memberships TO venueql_platform;
GRANT SELECT ON api_tokens TO venueql_app;
GRANT SELECT, INSERT, UPDATE (revoked_at) ON api_tokens TO venueql_platform;
GRANT SELECT, INSERT, DELETE, UPDATE (name, position) ON menu_categories TO venueql_app;
GRANT SELECT, INSERT, DELETE,
      UPDATE (category_id, name, description, price_minor, allergens, available, position, updated_at)
      ON menu_items TO venueql_app;
GRANT SELECT, INSERT ON menu_categories, menu_items TO venueql_platform;
GRANT SELECT, INSERT ON audit_events TO venueql_app, venueql_platform;

-- ───────────────────────────── audit: append-only + hash chain ─────────────────────────────

CREATE FUNCTION public.audit_reject_change() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$ BEGIN RAISE EXCEPTION 'audit events are append-only: % is not allowed', TG_OP
          USING ERRCODE = 'insufficient_privilege'; END $$;

CREATE TRIGGER audit_events_no_update_delete BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION public.audit_reject_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_reject_change();
-- Fire even with session_replication_role = replica.
ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_no_update_delete;
ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_no_truncate;

CREATE TRIGGER platform_audit_no_update_delete BEFORE UPDATE OR DELETE ON platform_audit_events
    FOR EACH ROW EXECUTE FUNCTION public.audit_reject_change();
CREATE TRIGGER platform_audit_no_truncate BEFORE TRUNCATE ON platform_audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION public.audit_reject_change();
ALTER TABLE platform_audit_events ENABLE ALWAYS TRIGGER platform_audit_no_update_delete;
ALTER TABLE platform_audit_events ENABLE ALWAYS TRIGGER platform_audit_no_truncate;

-- The canonical text an audit row's hash covers: every column but the hashes, in a fixed
-- order, as a JSON array (jsonb renders deterministically).
CREATE FUNCTION public.audit_canonical(e audit_events) RETURNS text
    LANGUAGE sql IMMUTABLE SET search_path = pg_catalog, pg_temp
    AS $$ SELECT jsonb_build_array(e.venue_id, e.seq, e.id,
              to_char(e.occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
              e.actor, e.action, e.target_type, e.target_id, e.before, e.after,
              e.request_id, host(e.ip))::text $$;

-- Appends the row to its venue's chain: serialises writers per venue, assigns seq and
-- both hashes. Runs as the inserting role, so it sees only that venue's rows.
CREATE FUNCTION public.audit_chain() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE last_seq bigint; last_hash bytea;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('venueql.audit:' || NEW.venue_id::text, 0));
    SELECT a.seq, a.row_hash INTO last_seq, last_hash
      FROM public.audit_events a WHERE a.venue_id = NEW.venue_id ORDER BY a.seq DESC LIMIT 1;
    NEW.seq := COALESCE(last_seq, 0) + 1;
    NEW.prev_hash := COALESCE(last_hash, '\x0000000000000000000000000000000000000000000000000000000000000000'::bytea);
    NEW.row_hash := sha256(NEW.prev_hash || convert_to(public.audit_canonical(NEW), 'UTF8'));
    RETURN NEW;
END $$;
CREATE TRIGGER audit_events_chain BEFORE INSERT ON audit_events
    FOR EACH ROW EXECUTE FUNCTION public.audit_chain();
ALTER TABLE audit_events ENABLE ALWAYS TRIGGER audit_events_chain;

-- ───────────────────────────── narrow doors into private ─────────────────────────────

-- Maps a token hash to its venue and token id; answers nothing for unknown hashes. The
-- caller then reads the token's permissions and revocation under that venue's scope.
CREATE FUNCTION private.lookup_api_token(p_token_hash bytea)
    RETURNS TABLE (venue_id uuid, token_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT h.venue_id, h.token_id FROM private.api_token_hashes h
          WHERE length(p_token_hash) = 32 AND h.token_hash = p_token_hash $$;

-- Records the hash of a newly issued token; the token row must already exist at the
-- caller's current venue (checked under the caller's own row-level security).
CREATE FUNCTION private.store_api_token_hash(p_token_id uuid, p_token_hash bytea) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    INSERT INTO private.api_token_hashes (token_hash, venue_id, token_id) VALUES (p_token_hash, v, p_token_id);
END $$;

CREATE FUNCTION private.set_staff_password(p_staff_id uuid, p_password_hash text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.staff_passwords (staff_id, password_hash) VALUES (p_staff_id, p_password_hash)
          ON CONFLICT (staff_id) DO UPDATE SET password_hash = EXCLUDED.password_hash, updated_at = now() $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT USAGE ON SCHEMA private TO venueql_app, venueql_platform;
GRANT EXECUTE ON FUNCTION private.lookup_api_token(bytea) TO venueql_app;
GRANT EXECUTE ON FUNCTION private.store_api_token_hash(uuid, bytea) TO venueql_platform;
GRANT EXECUTE ON FUNCTION private.set_staff_password(uuid, text) TO venueql_platform;
GRANT EXECUTE ON FUNCTION public.audit_canonical(audit_events) TO venueql_app, venueql_platform;
REVOKE ALL ON FUNCTION public.audit_chain(), public.audit_reject_change() FROM PUBLIC;
