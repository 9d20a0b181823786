-- Cashier PINs: one per person per venue (Argon2id hashes, never readable), used by the
-- PIN grant of registered POS terminals. A PIN dies with its membership.

CREATE TABLE private.staff_pins (
    venue_id   uuid NOT NULL,
    staff_id   uuid NOT NULL,
    pin_hash   text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, staff_id),
    FOREIGN KEY (venue_id, staff_id) REFERENCES memberships (venue_id, staff_id) ON DELETE CASCADE
);
COMMENT ON TABLE private.staff_pins IS 'Private: Argon2id hashes of cashier PINs per venue membership.';

-- Sets a member's PIN at the current venue; false when they are not a member here.
CREATE FUNCTION private.set_staff_pin(p_staff uuid, p_hash text) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH saved AS (
        INSERT INTO private.staff_pins (venue_id, staff_id, pin_hash)
        SELECT sv.venue_id, sv.staff_id, p_hash FROM private.staff_venues sv
        WHERE sv.staff_id = p_staff AND sv.venue_id = public.current_venue_id()
        ON CONFLICT (venue_id, staff_id) DO UPDATE SET pin_hash = EXCLUDED.pin_hash, updated_at = now()
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM saved) $$;

-- The PIN hash of the member with this email at the current venue.
CREATE FUNCTION private.staff_pin(p_email text) RETURNS TABLE (staff_id uuid, pin_hash text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT p.staff_id, p.pin_hash FROM private.staff_pins p JOIN public.staff s ON s.id = p.staff_id
          WHERE p.venue_id = public.current_venue_id() AND s.email = lower(trim(p_email)) $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION private.set_staff_pin(uuid, text), private.staff_pin(text) TO venueql_app;
