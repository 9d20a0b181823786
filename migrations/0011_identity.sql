-- Staff identity that belongs to the person (issue 10):
--   * invitations: a venue invites an email; nobody but the person sets their password;
--   * lockout counted before the secret is checked (atomic under concurrency);
--   * sessions carry whether they proved a second factor, and can be cut off per person
--     (password change, reset) however many venues they span;
--   * password reset tokens;
--   * a transactional mail outbox (payloads sealed under the platform data key);
--   * TOTP secrets sealed under the platform data key.

-- ───────────────────────────── invitations ─────────────────────────────

-- A venue's invitation of an email address. It grants nothing until the person accepts
-- it with their own credentials; accepting creates the membership.
CREATE TABLE staff_invitations (
    venue_id    uuid NOT NULL REFERENCES venues (id),
    id          uuid NOT NULL DEFAULT gen_random_uuid(),
    -- Normalised (lower-case) email the invitation was sent to.
    email       text NOT NULL CONSTRAINT staff_invitations_email_lower CHECK (email = lower(email) AND email LIKE '%_@_%'),
    -- The membership's permissions once accepted (only bits the inviter held).
    permissions bigint NOT NULL,
    -- Audit actor of the inviter.
    invited_by  text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    status      text NOT NULL DEFAULT 'pending'
                CONSTRAINT staff_invitations_status CHECK (status IN ('pending', 'accepted', 'declined', 'revoked')),
    decided_at  timestamptz,
    -- The person who accepted.
    staff_id    uuid REFERENCES staff (id),
    PRIMARY KEY (venue_id, id)
);
COMMENT ON TABLE staff_invitations IS 'Tenant: invitations to join a venue; accepted only by the invited person.';
CREATE UNIQUE INDEX staff_invitations_one_pending ON staff_invitations (venue_id, email) WHERE status = 'pending';
ALTER TABLE staff_invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE staff_invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY venue_isolation ON staff_invitations AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform
    USING (venue_id = (SELECT public.current_venue_id()))
    WITH CHECK (venue_id = (SELECT public.current_venue_id()));
GRANT SELECT, INSERT, UPDATE (status, decided_at, staff_id) ON staff_invitations TO venueql_app;

-- The one-time link of a pending invitation, by SHA-256. The email is kept beside it so
-- the narrow functions below can tie "has an account" to holding a live link.
CREATE TABLE private.invitation_tokens (
    token_hash    bytea PRIMARY KEY CONSTRAINT invitation_tokens_hash_length CHECK (length(token_hash) = 32),
    venue_id      uuid NOT NULL,
    invitation_id uuid NOT NULL UNIQUE,
    email         text NOT NULL,
    expires_at    timestamptz NOT NULL,
    FOREIGN KEY (venue_id, invitation_id) REFERENCES staff_invitations (venue_id, id)
);
COMMENT ON TABLE private.invitation_tokens IS 'Private: hashes of invitation links (deleted when the invitation is decided).';

-- Records the link of an invitation of the current venue.
CREATE FUNCTION private.store_invitation_token(p_hash bytea, p_invitation uuid, p_email text, p_expires timestamptz)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    INSERT INTO private.invitation_tokens (token_hash, venue_id, invitation_id, email, expires_at)
    VALUES (p_hash, v, p_invitation, lower(trim(p_email)), p_expires);
END $$;

-- The invitation a live link points to (nothing for unknown or expired links), and the
-- id of the person who already has an account under its email, if any.
CREATE FUNCTION private.invitation_by_token(p_hash bytea)
    RETURNS TABLE (venue_id uuid, invitation_id uuid, staff_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT t.venue_id, t.invitation_id, s.id FROM private.invitation_tokens t
          LEFT JOIN public.staff s ON s.email = t.email
          WHERE length(p_hash) = 32 AND t.token_hash = p_hash AND t.expires_at > now() $$;

-- Forgets the link of an invitation of the current venue (it was decided).
CREATE FUNCTION private.forget_invitation_token(p_invitation uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.invitation_tokens
          WHERE invitation_id = p_invitation AND venue_id = public.current_venue_id() $$;

-- Creates the identity of a new person from a live link, with the password they chose.
-- Refused when the email already has an account (they sign in instead).
CREATE FUNCTION private.create_invited_staff(p_hash bytea, p_password_hash text) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE e text; created uuid;
BEGIN
    SELECT t.email INTO e FROM private.invitation_tokens t
     WHERE t.token_hash = p_hash AND t.expires_at > now() AND t.venue_id = public.current_venue_id();
    IF e IS NULL THEN RAISE EXCEPTION 'no live invitation for this link' USING ERRCODE = 'P0002'; END IF;
    INSERT INTO public.staff (email) VALUES (e) RETURNING id INTO created;
    INSERT INTO private.staff_passwords (staff_id, password_hash) VALUES (created, p_password_hash);
    RETURN created;
END $$;

-- Venues may no longer create identities or choose passwords.
DROP FUNCTION private.find_or_create_staff(text, text);

-- ───────────────────────────── lockout ─────────────────────────────

-- Failures of one attempt share an id: the PIN grant counts against the terminal and the
-- person at once, and the per-IP limit counts the attempt once.
ALTER TABLE private.auth_failures ADD COLUMN attempt uuid NOT NULL DEFAULT gen_random_uuid();

CREATE OR REPLACE FUNCTION private.auth_retry_after(p_kind text, p_identifier bytea, p_ip inet, p_device text,
                                                    p_identifier_limit integer, p_ip_limit integer, p_base_secs integer)
    RETURNS integer
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH by_identifier AS (
        SELECT count(*) AS n, max(at) AS last FROM private.auth_failures
        WHERE kind = p_kind AND identifier_hash = p_identifier AND at > now() - interval '1 hour'
          AND (p_device IS NULL OR device = p_device)),
    by_ip AS (
        SELECT count(DISTINCT attempt) AS n, max(at) AS last FROM private.auth_failures
        WHERE kind = p_kind AND p_ip IS NOT NULL AND ip = p_ip AND at > now() - interval '1 hour'),
    delays AS (
        SELECT CASE WHEN n >= lim
               THEN ceil(extract(epoch FROM (last + make_interval(secs => least(900, p_base_secs * power(2, n - lim)))) - clock_timestamp()))
               ELSE 0 END AS wait
        FROM (SELECT n, last, p_identifier_limit AS lim FROM by_identifier
              UNION ALL SELECT n, last, p_ip_limit FROM by_ip) l)
    SELECT greatest(0, COALESCE(max(wait), 0))::integer FROM delays $$;

-- Begins an attempt to prove a secret for every identifier at once (e.g. terminal and
-- person). Serialised per identifier and per IP (advisory locks taken in one order), it
-- answers the seconds to wait, or 0 after recording the attempt as a failure in advance:
-- N concurrent wrong attempts let at most the limit through to a real check. A success
-- then clears the failures (private.auth_attempt_succeeded).
CREATE FUNCTION private.begin_auth_attempt(p_kind text, p_identifiers bytea[], p_ip inet, p_device text,
                                           p_identifier_limit integer, p_ip_limit integer, p_base_secs integer)
    RETURNS integer
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE wait integer := 0; one bytea; attempt_id uuid := gen_random_uuid();
BEGIN
    PERFORM pg_advisory_xact_lock(k) FROM (
        SELECT hashtextextended('venueql.lockout|' || p_kind || '|' || encode(i, 'hex'), 0) AS k FROM unnest(p_identifiers) i
        UNION SELECT hashtextextended('venueql.lockout-ip|' || p_kind || '|' || host(p_ip), 0) WHERE p_ip IS NOT NULL
        ORDER BY 1) keys;
    FOREACH one IN ARRAY p_identifiers LOOP
        wait := greatest(wait, private.auth_retry_after(p_kind, one, p_ip, p_device, p_identifier_limit, p_ip_limit, p_base_secs));
    END LOOP;
    IF wait > 0 THEN RETURN wait; END IF;
    INSERT INTO private.auth_failures (kind, identifier_hash, ip, device, attempt, at)
    SELECT p_kind, i, p_ip, p_device, attempt_id, clock_timestamp() FROM unnest(p_identifiers) i;
    RETURN 0;
END $$;

-- After a success: forget these identifiers' failures from this IP, the attempt's own
-- advance record included (NIST 800-63B 5.2.2).
CREATE FUNCTION private.auth_attempt_succeeded(p_kind text, p_identifiers bytea[], p_ip inet) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ DELETE FROM private.auth_failures WHERE kind = p_kind AND identifier_hash = ANY (p_identifiers)
          AND ip IS NOT DISTINCT FROM p_ip $$;

DROP FUNCTION private.record_auth_failure(text, bytea, inet, text);
DROP FUNCTION private.clear_auth_failures(text, bytea, inet);

-- ───────────────────────────── sessions ─────────────────────────────

-- Whether the session proved a second factor when it started (a venue requiring MFA for
-- elevated permissions gives those bits only to sessions that did).
ALTER TABLE oauth_grants ADD COLUMN mfa boolean NOT NULL DEFAULT false;
ALTER TABLE private.oauth_codes ADD COLUMN mfa boolean NOT NULL DEFAULT false;

DROP FUNCTION private.store_oauth_code(bytea, text, uuid, text, text, integer);
CREATE FUNCTION private.store_oauth_code(p_hash bytea, p_client text, p_staff uuid, p_redirect text, p_challenge text,
                                         p_ttl_secs integer, p_mfa boolean)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    IF NOT EXISTS (SELECT 1 FROM private.staff_venues WHERE staff_id = p_staff AND venue_id = v) THEN
        RAISE EXCEPTION 'staff member does not belong to this venue';
    END IF;
    INSERT INTO private.oauth_codes (code_hash, client_id, staff_id, venue_id, redirect_uri, code_challenge, expires_at, mfa)
    VALUES (p_hash, p_client, p_staff, v, p_redirect, p_challenge, now() + make_interval(secs => p_ttl_secs), p_mfa);
END $$;

DROP FUNCTION private.peek_oauth_code(bytea);
CREATE FUNCTION private.peek_oauth_code(p_hash bytea)
    RETURNS TABLE (client_id text, staff_id uuid, venue_id uuid, redirect_uri text, code_challenge text,
                   expired boolean, used boolean, grant_id uuid, mfa boolean)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT c.client_id, c.staff_id, c.venue_id, c.redirect_uri, c.code_challenge, c.expires_at < now(),
                 c.used_at IS NOT NULL, c.grant_id, c.mfa
          FROM private.oauth_codes c WHERE c.code_hash = p_hash $$;

-- A person's sessions started at or before `cutoff` are over, at every venue, except
-- `keep_grant` (the session that changed the password keeps going).
CREATE TABLE private.staff_session_cutoffs (
    staff_id   uuid PRIMARY KEY REFERENCES staff (id) ON DELETE CASCADE,
    cutoff     timestamptz NOT NULL,
    keep_grant uuid
);
COMMENT ON TABLE private.staff_session_cutoffs IS 'Private: per person, sessions started before this instant are revoked.';

CREATE FUNCTION private.session_cut_off(p_staff uuid, p_grant uuid, p_started timestamptz) RETURNS boolean
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT EXISTS (SELECT 1 FROM private.staff_session_cutoffs c
          WHERE c.staff_id = p_staff AND p_started <= c.cutoff AND p_grant IS DISTINCT FROM c.keep_grant) $$;

CREATE FUNCTION private.cut_off_sessions(p_staff uuid, p_keep_grant uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.staff_session_cutoffs (staff_id, cutoff, keep_grant) VALUES (p_staff, clock_timestamp(), p_keep_grant)
          ON CONFLICT (staff_id) DO UPDATE SET cutoff = EXCLUDED.cutoff, keep_grant = EXCLUDED.keep_grant $$;

-- ───────────────────────────── passwords ─────────────────────────────

-- A person changes their own password (verified by the caller with the current one);
-- their other sessions end.
CREATE FUNCTION private.change_staff_password(p_staff uuid, p_password_hash text, p_keep_grant uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.staff_passwords SET password_hash = p_password_hash, updated_at = now() WHERE staff_id = p_staff;
          SELECT private.cut_off_sessions(p_staff, p_keep_grant) $$;

-- Password reset links (single use, short-lived), by SHA-256.
CREATE TABLE private.password_resets (
    token_hash bytea PRIMARY KEY CONSTRAINT password_resets_hash_length CHECK (length(token_hash) = 32),
    staff_id   uuid NOT NULL REFERENCES staff (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at    timestamptz
);
COMMENT ON TABLE private.password_resets IS 'Private: hashes of password reset links.';

-- Creates a reset link for the person with this email; NULL when there is none (the
-- caller answers the same either way). Returns the person's id.
CREATE FUNCTION private.create_password_reset(p_email text, p_hash bytea, p_ttl_secs integer) RETURNS uuid
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.password_resets (token_hash, staff_id, expires_at)
          SELECT p_hash, s.id, now() + make_interval(secs => p_ttl_secs) FROM public.staff s
          WHERE s.email = lower(trim(p_email))
          RETURNING staff_id $$;

-- Whether a reset link is live (unknown, used and expired links alike answer nothing).
CREATE FUNCTION private.password_reset_live(p_hash bytea) RETURNS TABLE (staff_id uuid, email text)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT r.staff_id, s.email FROM private.password_resets r JOIN public.staff s ON s.id = r.staff_id
          WHERE length(p_hash) = 32 AND r.token_hash = p_hash AND r.used_at IS NULL AND r.expires_at > now() $$;

-- Uses a live reset link once: sets the password and ends every session of the person.
-- Returns the person, or NULL when the link was not live (used, expired or unknown).
CREATE FUNCTION private.complete_password_reset(p_hash bytea, p_password_hash text) RETURNS uuid
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE who uuid;
BEGIN
    SELECT r.staff_id INTO who FROM private.password_resets r WHERE r.token_hash = p_hash;
    IF who IS NULL THEN RETURN NULL; END IF;
    -- One reset of a person at a time (two links completed at once would deadlock).
    PERFORM 1 FROM private.staff_passwords WHERE staff_id = who FOR UPDATE;
    UPDATE private.password_resets SET used_at = now()
     WHERE token_hash = p_hash AND used_at IS NULL AND expires_at > now();
    IF NOT FOUND THEN RETURN NULL; END IF;
    UPDATE private.password_resets SET used_at = now() WHERE staff_id = who AND used_at IS NULL;
    UPDATE private.staff_passwords SET password_hash = p_password_hash, updated_at = now() WHERE staff_id = who;
    -- A reset recovers a compromised account: PINs someone set with the old password go too.
    DELETE FROM private.staff_pins WHERE staff_id = who;
    PERFORM private.cut_off_sessions(who, NULL);
    RETURN who;
END $$;

-- ───────────────────────────── mail outbox ─────────────────────────────

-- Mail to send, written in the transaction of what causes it (an invitation, a reset) and
-- delivered by a background worker of any server process: nothing is sent for a change
-- that rolled back, and nothing is lost when a process dies before sending.
CREATE TABLE private.mail_outbox (
    id              uuid PRIMARY KEY,
    kind            text NOT NULL,
    -- The recipient and the message's parameters as JSON, sealed under the platform data
    -- key (they carry one-time links, and a diner's address is personal data); NULL once
    -- sent.
    payload         bytea,
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A worker holds the row until then (another takes over if it died).
    locked_until    timestamptz,
    sent_at         timestamptz,
    failed_at       timestamptz,
    last_error      text
);
COMMENT ON TABLE private.mail_outbox IS 'Private: outgoing mail (transactional outbox), payloads sealed.';
CREATE INDEX mail_outbox_due ON private.mail_outbox (next_attempt_at) WHERE sent_at IS NULL AND failed_at IS NULL;

CREATE FUNCTION private.enqueue_mail(p_id uuid, p_kind text, p_payload bytea) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ INSERT INTO private.mail_outbox (id, kind, payload) VALUES (p_id, p_kind, p_payload) $$;

-- Takes up to p_limit due mails for p_lease_secs (skipping those another worker holds).
CREATE FUNCTION private.claim_mail(p_limit integer, p_lease_secs integer)
    RETURNS TABLE (id uuid, kind text, payload bytea, attempts integer)
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    UPDATE private.mail_outbox m SET locked_until = clock_timestamp() + make_interval(secs => p_lease_secs)
    WHERE m.id IN (SELECT o.id FROM private.mail_outbox o
                   WHERE o.sent_at IS NULL AND o.failed_at IS NULL AND o.next_attempt_at <= clock_timestamp()
                     AND (o.locked_until IS NULL OR o.locked_until < clock_timestamp())
                   ORDER BY o.next_attempt_at LIMIT p_limit FOR UPDATE SKIP LOCKED)
    RETURNING m.id, m.kind, m.payload, m.attempts $$;

CREATE FUNCTION private.mail_sent(p_id uuid) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.mail_outbox SET sent_at = now(), payload = NULL, locked_until = NULL, last_error = NULL
          WHERE id = p_id $$;

-- A failed delivery: try again after p_retry_secs, or give up (payload dropped).
CREATE FUNCTION private.mail_failed(p_id uuid, p_error text, p_retry_secs integer, p_give_up boolean) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.mail_outbox SET attempts = attempts + 1, last_error = left(p_error, 500), locked_until = NULL,
              next_attempt_at = clock_timestamp() + make_interval(secs => p_retry_secs),
              failed_at = CASE WHEN p_give_up THEN now() END,
              payload = CASE WHEN p_give_up THEN NULL ELSE payload END
          WHERE id = p_id $$;

-- Mails not yet sent (for the operator's logs and the tests).
CREATE FUNCTION private.mail_waiting() RETURNS bigint
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT count(*) FROM private.mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL $$;

-- ───────────────────────────── TOTP and PINs ─────────────────────────────

-- TOTP secrets are now sealed (venueql field format, platform data key, bound to the
-- person and column); a secret stored before (20 plain bytes) is sealed on its next use.
ALTER TABLE private.staff_totp DROP CONSTRAINT staff_totp_secret_length;
ALTER TABLE private.staff_totp ADD CONSTRAINT staff_totp_secret_sealed_or_legacy
    CHECK (length(secret) = 20 OR (length(secret) > 33 AND get_byte(secret, 0) = 1));

-- Confirming enrolment only works while TOTP is not on yet: once it is, a code can no
-- longer mint fresh recovery codes (which a stolen session could then use as step-up).
CREATE OR REPLACE FUNCTION private.accept_totp_step(p_staff uuid, p_step bigint, p_confirm boolean) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH accepted AS (
        UPDATE private.staff_totp SET last_step = p_step,
            confirmed_at = CASE WHEN p_confirm THEN now() ELSE confirmed_at END
        WHERE staff_id = p_staff AND last_step < p_step
          AND (CASE WHEN p_confirm THEN confirmed_at IS NULL ELSE confirmed_at IS NOT NULL END)
        RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM accepted) $$;

CREATE FUNCTION private.reseal_totp(p_staff uuid, p_legacy bytea, p_sealed bytea) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.staff_totp SET secret = p_sealed WHERE staff_id = p_staff AND secret = p_legacy $$;

-- Clears a member's PIN at the current venue; false when they had none.
CREATE FUNCTION private.clear_staff_pin(p_staff uuid) RETURNS boolean
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
    WITH cleared AS (
        DELETE FROM private.staff_pins WHERE venue_id = public.current_venue_id() AND staff_id = p_staff RETURNING 1)
    SELECT EXISTS (SELECT 1 FROM cleared) $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.store_invitation_token(bytea, uuid, text, timestamptz), private.invitation_by_token(bytea),
    private.forget_invitation_token(uuid), private.create_invited_staff(bytea, text),
    private.begin_auth_attempt(text, bytea[], inet, text, integer, integer, integer),
    private.auth_attempt_succeeded(text, bytea[], inet),
    private.store_oauth_code(bytea, text, uuid, text, text, integer, boolean), private.peek_oauth_code(bytea),
    private.session_cut_off(uuid, uuid, timestamptz), private.cut_off_sessions(uuid, uuid),
    private.change_staff_password(uuid, text, uuid),
    private.create_password_reset(text, bytea, integer), private.password_reset_live(bytea),
    private.complete_password_reset(bytea, text),
    private.enqueue_mail(uuid, text, bytea), private.claim_mail(integer, integer), private.mail_sent(uuid),
    private.mail_failed(uuid, text, integer, boolean), private.mail_waiting(),
    private.reseal_totp(uuid, bytea, bytea), private.clear_staff_pin(uuid)
    TO venueql_app;
-- Operator commands: reset links and their mail, MFA reset, through the cross-tenant door.
GRANT EXECUTE ON FUNCTION
    private.create_password_reset(text, bytea, integer), private.enqueue_mail(uuid, text, bytea),
    private.disable_totp(uuid), private.cut_off_sessions(uuid, uuid),
    private.platform_data_key(integer), private.add_platform_data_key(integer, bytea, text)
    TO venueql_platform;
