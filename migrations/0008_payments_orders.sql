-- Payments and orders (issue 4): each venue's Stripe connected account, diners' checkouts
-- (priced from the menu, one PaymentIntent each), orders (created only by a verified
-- payment_intent.succeeded event), their refunds and disputes. Tenant tables keep
-- venue_id as the leading key and reference each other by (venue_id, id). Stripe ids are
-- routed back to a venue through private index tables reached by narrow functions.

-- ───────────────────────────── tenant tables ─────────────────────────────

CREATE TABLE stripe_accounts (
    venue_id          uuid PRIMARY KEY REFERENCES venues (id),
    account_id        text NOT NULL CONSTRAINT stripe_accounts_account_format CHECK (account_id ~ '^acct_[A-Za-z0-9]+$'),
    charges_enabled   boolean NOT NULL DEFAULT false,
    payouts_enabled   boolean NOT NULL DEFAULT false,
    details_submitted boolean NOT NULL DEFAULT false,
    -- requirements.currently_due and disabled_reason of the newest account object seen.
    requirements_due  text[] NOT NULL DEFAULT '{}',
    disabled_reason   text,
    -- When Stripe produced the state above (event `created`): older events never win.
    state_at          timestamptz NOT NULL DEFAULT '-infinity',
    -- Tie-break between events of the same second (deterministic whatever the arrival order).
    state_event       text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE stripe_accounts IS 'Tenant: the venue''s Stripe Connect Express account and its onboarding state.';

CREATE TABLE checkouts (
    venue_id              uuid NOT NULL REFERENCES venues (id),
    id                    uuid NOT NULL DEFAULT gen_random_uuid(),
    -- creating: priced, PaymentIntent being created; pending: awaiting payment;
    -- succeeded: paid (an order exists); failed/canceled: payment failed or was cancelled;
    -- expired: nobody paid in time (its PaymentIntent is cancelled).
    status                text NOT NULL DEFAULT 'creating'
        CONSTRAINT checkouts_status CHECK (status IN ('creating', 'pending', 'succeeded', 'failed', 'canceled', 'expired')),
    amount_minor          bigint NOT NULL CONSTRAINT checkouts_amount_range CHECK (amount_minor BETWEEN 1 AND 99999999),
    currency              text NOT NULL CONSTRAINT checkouts_currency_format CHECK (currency ~ '^[A-Z]{3}$'),
    application_fee_minor bigint NOT NULL CONSTRAINT checkouts_fee_range CHECK (application_fee_minor >= 0 AND application_fee_minor <= amount_minor),
    table_ref             text CONSTRAINT checkouts_table_ref_length CHECK (length(table_ref) BETWEEN 1 AND 40),
    payment_intent_id     text CONSTRAINT checkouts_payment_intent_format CHECK (payment_intent_id ~ '^pi_[A-Za-z0-9]+$'),
    -- SHA-256 of the PaymentIntent's client secret: the diner proves they hold it.
    client_secret_hash    bytea,
    failure_reason        text,
    -- Newest payment_intent event applied (failed/canceled never override a success).
    state_at              timestamptz NOT NULL DEFAULT '-infinity',
    state_event           text NOT NULL DEFAULT '',
    -- Highest charge.amount_refunded seen (charge.refunded events; only grows).
    charge_amount_refunded bigint NOT NULL DEFAULT 0,
    expires_at            timestamptz NOT NULL,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, id),
    CONSTRAINT checkouts_payment_intent_key UNIQUE (venue_id, payment_intent_id)
);
COMMENT ON TABLE checkouts IS 'Tenant: a diner''s priced basket and its PaymentIntent; not an order.';
CREATE INDEX checkouts_pending_idx ON checkouts (venue_id, expires_at) WHERE status IN ('creating', 'pending');

CREATE TABLE checkout_items (
    venue_id         uuid NOT NULL,
    checkout_id      uuid NOT NULL,
    line             integer NOT NULL CONSTRAINT checkout_items_line_range CHECK (line BETWEEN 1 AND 100),
    -- The menu item ordered (NULL once the item is deleted from the menu).
    menu_item_id     uuid,
    -- Name, price and declared allergens as they were when the diner checked out.
    name             text NOT NULL,
    unit_price_minor bigint NOT NULL CONSTRAINT checkout_items_price_range CHECK (unit_price_minor BETWEEN 0 AND 100000000),
    quantity         integer NOT NULL CONSTRAINT checkout_items_quantity_range CHECK (quantity BETWEEN 1 AND 99),
    note             text CONSTRAINT checkout_items_note_length CHECK (length(note) <= 200),
    allergens        text[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (venue_id, checkout_id, line),
    CONSTRAINT checkout_items_checkout_fkey FOREIGN KEY (venue_id, checkout_id) REFERENCES checkouts (venue_id, id),
    CONSTRAINT checkout_items_menu_item_fkey FOREIGN KEY (venue_id, menu_item_id)
        REFERENCES menu_items (venue_id, id) ON DELETE SET NULL (menu_item_id)
);
COMMENT ON TABLE checkout_items IS 'Tenant: the lines of a checkout (and so of its order), priced from the menu.';

CREATE TABLE order_counters (
    venue_id    uuid PRIMARY KEY REFERENCES venues (id),
    last_number bigint NOT NULL
);
COMMENT ON TABLE order_counters IS 'Tenant: the last order number given at the venue.';

CREATE TABLE orders (
    venue_id          uuid NOT NULL REFERENCES venues (id),
    id                uuid NOT NULL DEFAULT gen_random_uuid(),
    -- Per-venue, increasing, starting at 1.
    number            bigint NOT NULL CONSTRAINT orders_number_positive CHECK (number > 0),
    checkout_id       uuid NOT NULL,
    status            text NOT NULL DEFAULT 'placed'
        CONSTRAINT orders_status CHECK (status IN ('placed', 'preparing', 'ready', 'served', 'cancelled', 'refunded')),
    amount_minor      bigint NOT NULL CONSTRAINT orders_amount_range CHECK (amount_minor > 0),
    currency          text NOT NULL,
    table_ref         text,
    -- The read model of the order, kept in the row so that reading the queue touches one
    -- table whatever else has grown: the checkout's lines (name, price, allergens as
    -- ordered) copied when the order is created, and the refund and dispute state
    -- recomputed from refunds/disputes whenever they change (orders::sync_money).
    lines             jsonb NOT NULL DEFAULT '[]',
    refunded_minor    bigint NOT NULL DEFAULT 0,
    refund_pending_minor bigint NOT NULL DEFAULT 0,
    -- The kitchen status the order had when it became `refunded`, restored if a refund
    -- that covered it fails after all.
    status_before_refund text,
    dispute_status    text,
    -- The Stripe event that created the order.
    created_by_event  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, id),
    CONSTRAINT orders_number_key UNIQUE (venue_id, number),
    -- At most one order per checkout.
    CONSTRAINT orders_checkout_key UNIQUE (venue_id, checkout_id),
    CONSTRAINT orders_checkout_fkey FOREIGN KEY (venue_id, checkout_id) REFERENCES checkouts (venue_id, id)
);
COMMENT ON TABLE orders IS 'Tenant: paid orders; inserted only by the payment_intent.succeeded handler.';
CREATE INDEX orders_open_idx ON orders (venue_id, created_at) WHERE status IN ('placed', 'preparing', 'ready');
CREATE INDEX orders_history_idx ON orders (venue_id, number DESC);

CREATE TABLE payments (
    venue_id               uuid NOT NULL,
    order_id               uuid NOT NULL,
    payment_intent_id      text NOT NULL,
    charge_id              text,
    amount_minor           bigint NOT NULL,
    currency               text NOT NULL,
    application_fee_minor  bigint NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, order_id),
    CONSTRAINT payments_order_fkey FOREIGN KEY (venue_id, order_id) REFERENCES orders (venue_id, id)
);
COMMENT ON TABLE payments IS 'Tenant: the verified Stripe payment of an order.';

CREATE TABLE refunds (
    venue_id         uuid NOT NULL,
    id               uuid NOT NULL DEFAULT gen_random_uuid(),
    checkout_id      uuid NOT NULL,
    stripe_refund_id text CONSTRAINT refunds_stripe_id_format CHECK (stripe_refund_id ~ '^(re|pyr)_[A-Za-z0-9]+$'),
    amount_minor     bigint NOT NULL CONSTRAINT refunds_amount_positive CHECK (amount_minor > 0),
    currency         text NOT NULL,
    -- requested: asked of Stripe, no answer yet; pending: Stripe accepted it, awaiting the
    -- webhook; then Stripe's own final states.
    status           text NOT NULL
        CONSTRAINT refunds_status CHECK (status IN ('requested', 'pending', 'requires_action', 'succeeded', 'failed', 'canceled')),
    reason           text CONSTRAINT refunds_reason_length CHECK (length(reason) <= 500),
    requested_by     text,
    state_at         timestamptz NOT NULL DEFAULT '-infinity',
    state_event      text NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, id),
    CONSTRAINT refunds_stripe_key UNIQUE (venue_id, stripe_refund_id),
    CONSTRAINT refunds_checkout_fkey FOREIGN KEY (venue_id, checkout_id) REFERENCES checkouts (venue_id, id)
);
CREATE INDEX refunds_checkout_idx ON refunds (venue_id, checkout_id);
COMMENT ON TABLE refunds IS 'Tenant: refunds of a checkout''s payment, ours and any made in Stripe''s Dashboard.';

CREATE TABLE disputes (
    venue_id          uuid NOT NULL,
    stripe_dispute_id text NOT NULL CONSTRAINT disputes_stripe_id_format CHECK (stripe_dispute_id ~ '^(dp|du)_[A-Za-z0-9]+$'),
    checkout_id       uuid NOT NULL,
    amount_minor      bigint NOT NULL,
    currency          text NOT NULL,
    reason            text NOT NULL,
    status            text NOT NULL,
    state_at          timestamptz NOT NULL DEFAULT '-infinity',
    state_event       text NOT NULL DEFAULT '',
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (venue_id, stripe_dispute_id),
    CONSTRAINT disputes_checkout_fkey FOREIGN KEY (venue_id, checkout_id) REFERENCES checkouts (venue_id, id)
);
CREATE INDEX disputes_checkout_idx ON disputes (venue_id, checkout_id);
COMMENT ON TABLE disputes IS 'Tenant: chargebacks against a checkout''s payment.';

-- The one way a tenant table is isolated from here on (0001-0004 spell it out; editing
-- an applied migration would change its checksum): RLS enabled and forced, one policy
-- comparing venue_id with the transaction's venue. Owner-only.
CREATE PROCEDURE private.isolate_by_venue(p_table regclass)
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format(
        'CREATE POLICY venue_isolation ON %s AS PERMISSIVE FOR ALL TO venueql_app, venueql_platform '
        'USING (venue_id = (SELECT public.current_venue_id())) '
        'WITH CHECK (venue_id = (SELECT public.current_venue_id()))', p_table);
END $$;
REVOKE ALL ON PROCEDURE private.isolate_by_venue(regclass) FROM PUBLIC;

CALL private.isolate_by_venue('stripe_accounts');
CALL private.isolate_by_venue('checkouts');
CALL private.isolate_by_venue('checkout_items');
CALL private.isolate_by_venue('order_counters');
CALL private.isolate_by_venue('orders');
CALL private.isolate_by_venue('payments');
CALL private.isolate_by_venue('refunds');
CALL private.isolate_by_venue('disputes');

GRANT SELECT, INSERT,
      UPDATE (charges_enabled, payouts_enabled, details_submitted, requirements_due, disabled_reason, state_at, state_event, updated_at)
      ON stripe_accounts TO venueql_app;
GRANT SELECT, INSERT,
      UPDATE (status, payment_intent_id, client_secret_hash, failure_reason, state_at, state_event,
              charge_amount_refunded, updated_at)
      ON checkouts TO venueql_app;
GRANT SELECT, INSERT ON checkout_items TO venueql_app;
GRANT SELECT, INSERT, UPDATE (last_number) ON order_counters TO venueql_app;
GRANT SELECT, INSERT,
      UPDATE (status, refunded_minor, refund_pending_minor, dispute_status, status_before_refund, updated_at)
      ON orders TO venueql_app;
GRANT SELECT, INSERT ON payments TO venueql_app;
GRANT SELECT, INSERT, UPDATE (stripe_refund_id, status, state_at, state_event, updated_at) ON refunds TO venueql_app;
GRANT SELECT, INSERT, UPDATE (status, reason, amount_minor, state_at, state_event, updated_at) ON disputes TO venueql_app;

-- Live queue: every order change is announced on its venue's channel, payload the order
-- id; listeners re-read the order under that venue's scope.
CREATE FUNCTION public.notify_order_changed() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp
    AS $$ BEGIN
        PERFORM pg_notify('venueql_orders_' || replace(NEW.venue_id::text, '-', ''), NEW.id::text);
        RETURN NULL;
    END $$;
CREATE TRIGGER orders_notify AFTER INSERT OR UPDATE ON orders
    FOR EACH ROW EXECUTE FUNCTION public.notify_order_changed();
REVOKE ALL ON FUNCTION public.notify_order_changed() FROM PUBLIC;

-- ───────────────────────────── private routing indexes ─────────────────────────────

-- Which venue a connected account belongs to (account.updated arrives with `account`).
CREATE TABLE private.stripe_account_venues (
    account_id text PRIMARY KEY,
    venue_id   uuid NOT NULL UNIQUE REFERENCES venues (id)
);
COMMENT ON TABLE private.stripe_account_venues IS 'Private: connected account id -> venue.';

-- Which venue and checkout a PaymentIntent belongs to (charges, refunds and disputes
-- name only the PaymentIntent), and what reconciliation knows about it.
CREATE TABLE private.stripe_payment_intents (
    payment_intent_id text PRIMARY KEY,
    venue_id          uuid NOT NULL REFERENCES venues (id),
    checkout_id       uuid NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    -- Set when the checkout's order exists or its payment ended without one.
    settled_at        timestamptz,
    -- Set when reconciliation raised "paid but no order".
    alerted_at        timestamptz,
    -- When reconciliation last asked Stripe about it (the least recently checked go first,
    -- so slow payments cannot hold up the rest).
    checked_at        timestamptz
);
CREATE INDEX stripe_payment_intents_open_idx ON private.stripe_payment_intents (created_at)
    WHERE settled_at IS NULL AND alerted_at IS NULL;
COMMENT ON TABLE private.stripe_payment_intents IS 'Private: PaymentIntent id -> venue and checkout, for routing and reconciliation.';

ALTER TABLE private.stripe_events ADD COLUMN outcome text;

-- Records the current venue's connected account.
CREATE FUNCTION private.register_stripe_account(p_account text) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    INSERT INTO private.stripe_account_venues (account_id, venue_id) VALUES (p_account, v) ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION private.stripe_account_venue(p_account text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT venue_id FROM private.stripe_account_venues WHERE account_id = p_account $$;

-- Records a PaymentIntent of one of the current venue's checkouts.
CREATE FUNCTION private.register_payment_intent(p_payment_intent text, p_checkout uuid) RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$
DECLARE v uuid := public.current_venue_id();
BEGIN
    IF v IS NULL THEN RAISE EXCEPTION 'no venue scope'; END IF;
    INSERT INTO private.stripe_payment_intents (payment_intent_id, venue_id, checkout_id)
    VALUES (p_payment_intent, v, p_checkout) ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION private.payment_intent_route(p_payment_intent text) RETURNS TABLE (venue_id uuid, checkout_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT venue_id, checkout_id FROM private.stripe_payment_intents WHERE payment_intent_id = p_payment_intent $$;

-- Marks the current venue's PaymentIntent settled (order exists, or payment ended).
CREATE FUNCTION private.settle_payment_intent(p_payment_intent text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.stripe_payment_intents SET settled_at = COALESCE(settled_at, now())
          WHERE payment_intent_id = p_payment_intent AND venue_id = public.current_venue_id() $$;

-- Reconciliation: open PaymentIntents older than the delay, oldest first.
CREATE FUNCTION private.unsettled_payment_intents(p_older_than interval, p_limit integer)
    RETURNS TABLE (payment_intent_id text, venue_id uuid, checkout_id uuid)
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ SELECT payment_intent_id, venue_id, checkout_id FROM private.stripe_payment_intents
          WHERE settled_at IS NULL AND alerted_at IS NULL AND created_at < now() - p_older_than
          ORDER BY coalesce(checked_at, created_at) LIMIT p_limit $$;

CREATE FUNCTION private.mark_payment_intent_checked(p_payment_intent text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.stripe_payment_intents SET checked_at = now()
          WHERE payment_intent_id = p_payment_intent AND venue_id = public.current_venue_id() $$;

CREATE FUNCTION private.mark_payment_intent_alerted(p_payment_intent text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.stripe_payment_intents SET alerted_at = now()
          WHERE payment_intent_id = p_payment_intent AND venue_id = public.current_venue_id() $$;

-- Marks an event applied, with its venue and what it did.
CREATE FUNCTION private.finish_stripe_event(p_id text, p_venue uuid, p_outcome text) RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS $$ UPDATE private.stripe_events SET processed_at = now(), venue_id = p_venue, outcome = p_outcome
          WHERE id = p_id $$;

REVOKE ALL ON ALL FUNCTIONS IN SCHEMA private FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    private.register_stripe_account(text),
    private.stripe_account_venue(text),
    private.register_payment_intent(text, uuid),
    private.payment_intent_route(text),
    private.settle_payment_intent(text),
    private.unsettled_payment_intents(interval, integer),
    private.mark_payment_intent_alerted(text),
    private.mark_payment_intent_checked(text),
    private.finish_stripe_event(text, uuid, text)
    TO venueql_app;
