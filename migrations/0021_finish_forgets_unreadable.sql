-- An event applied after it could not be read once (a fixed reader, Stripe's retry, or
-- `venueql stripe replay`) leaves the operator's list of unreadable events in the same
-- statement that marks it processed: no extra round trip on every webhook.

CREATE OR REPLACE FUNCTION private.finish_stripe_event(p_id text, p_venue uuid, p_outcome text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.stripe_events SET processed_at = now(), venue_id = p_venue, outcome = p_outcome
          WHERE id = p_id;
          DELETE FROM private.stripe_unreadable_events WHERE id = p_id $$;

DROP FUNCTION private.forget_unreadable_stripe_event(text);
