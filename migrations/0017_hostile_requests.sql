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
