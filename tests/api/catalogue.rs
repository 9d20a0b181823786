//! The catalogue test: every table and view is either tenant-scoped (venue_id leads the
//! primary key, RLS enabled and forced, a venue policy) or on the one platform-level
//! list; views are security_invoker; SECURITY DEFINER functions pin search_path; and the
//! app role holds exactly the privileges deliberately granted.

use sqlx::{Connection, PgConnection};

use crate::helpers::TestApp;

/// Platform-level tables: no venue_id, reached by the app role only as listed below.
const PLATFORM_LEVEL: &[&str] = &[
    // The alert outbox, its windows and deliveries; the audit chain heads and the WORM
    // exporter's cursors (migration 0016): kinds, ids and counts, no tenant rows.
    "private.alert_deliveries",
    "private.alert_events",
    "private.alert_windows",
    "private.audit_export_cursors",
    "private.audit_heads",
    "private.api_token_hashes",
    "private.api_token_state",
    "private.diner_codes",
    "private.diner_identities",
    "private.diner_profiles",
    "private.invitation_tokens",
    "private.mail_outbox",
    "private.password_resets",
    "private.staff_session_cutoffs",
    "private.auth_failures",
    "private.oauth_clients",
    "private.oauth_codes",
    "private.oauth_tokens",
    "private.platform_data_keys",
    "private.security_events",
    "private.server_instances",
    "private.staff_passwords",
    "private.staff_pins",
    "private.staff_recovery_codes",
    "private.staff_totp",
    "private.staff_venues",
    "private.stripe_account_venues",
    "private.stripe_events",
    "private.stripe_payment_intents",
    "private.stripe_unreadable_events",
    "public._sqlx_migrations",
    "public.platform_audit_events",
    "public.staff",
    "public.venues",
];

/// Every privilege the app role (venueql_app) holds. Adding one means adding it here.
const APP_PRIVILEGES: &[&str] = &[
    // Keyed seals, the chain heads the audit trigger keeps, the WORM exporter and the
    // alert outbox (migration 0016).
    "function private.advance_audit_export(p_stream text, p_through bigint) EXECUTE",
    "function private.alert_delivered(p_id bigint) EXECUTE",
    "function private.alert_delivery_failed(p_id bigint, p_error text, p_retry_ms integer) EXECUTE",
    "function private.audit_export_cursor(p_stream text) EXECUTE",
    "function private.audit_export_due() EXECUTE",
    "function private.claim_alert_deliveries(p_limit integer, p_lease_secs integer) EXECUTE",
    "function private.plan_alerts(p_digest_secs integer) EXECUTE",
    "function private.platform_audit_batch(p_after bigint, p_limit integer) EXECUTE",
    "function private.raise_alert(p_kind text, p_venue uuid, p_summary text) EXECUTE",
    "table public.audit_seals INSERT",
    "table public.audit_seals SELECT",
    // Cross-venue scans of jobs, recorded (migration 0015).
    "function private.open_venue_scan(p_actor text, p_reason text) EXECUTE",
    // CORS origins and venue SPA clients (migration 0014).
    "function private.client_allows_origin(p_client text, p_origin text) EXECUTE",
    "function private.create_venue_client(p_id text, p_kind text, p_name text, p_permissions bigint, p_secret_hash bytea, p_redirect_uris text[], p_allowed_origins text[]) EXECUTE",
    "function private.set_venue_client_origins(p_id text, p_origins text[]) EXECUTE",
    "function private.spa_origin_registered(p_origin text) EXECUTE",
    "function private.valid_origins(p_origins text[]) EXECUTE",
    "table public.venue_settings(allowed_origins) UPDATE",
    "table public.venue_settings(default_tax_rate_id) UPDATE",
    "table public.venue_settings(service_charge_ppm) UPDATE",
    "table public.venue_settings(service_charge_tax_rate_id) UPDATE",
    "table public.venue_settings(tip_presets_ppm) UPDATE",
    "table public.venue_settings(tips_enabled) UPDATE",
    "table public.venue_settings(tax_id) UPDATE",
    "table public.venue_settings(tax_mode) UPDATE",
    // Verified diners and retention (migration 0013).
    "function private.check_diner_code(p_identity bytea, p_code_hash bytea) EXECUTE",
    "function private.diner_paid(p_identity bytea, p_verified boolean, p_consent boolean, p_allergens bytea, p_dietary_notes bytea) EXECUTE",
    "function private.forget_payment_intents(p_checkouts uuid[]) EXECUTE",
    "function private.purge_stripe_event_bodies(p_before timestamp with time zone) EXECUTE",
    "function private.purge_unrouted_stripe_event_bodies(p_before timestamp with time zone) EXECUTE",
    "function private.store_diner_code(p_identity bytea, p_code_hash bytea, p_ttl_secs integer) EXECUTE",
    "table public.checkout_items DELETE",
    "table public.checkouts DELETE",
    "table public.diners(verified_at) UPDATE",
    // Rate-limit shares (migration 0012).
    "function private.heartbeat_instance(p_id uuid, p_window_secs integer) EXECUTE",
    "function private.retire_instance(p_id uuid) EXECUTE",
    // Identity (migration 0011): invitations, atomic lockout, sessions, resets, mail, TOTP.
    "function private.auth_attempt_succeeded(p_kind text, p_identifiers bytea[], p_ip inet) EXECUTE",
    "function private.begin_auth_attempt(p_kind text, p_identifiers bytea[], p_ip inet, p_device text, p_identifier_limit integer, p_ip_limit integer, p_base_secs integer) EXECUTE",
    "function private.change_staff_password(p_staff uuid, p_password_hash text, p_keep_grant uuid) EXECUTE",
    "function private.claim_mail(p_limit integer, p_lease_secs integer) EXECUTE",
    "function private.clear_staff_pin(p_staff uuid) EXECUTE",
    "function private.complete_password_reset(p_hash bytea, p_password_hash text) EXECUTE",
    "function private.create_invited_staff(p_hash bytea, p_password_hash text) EXECUTE",
    "function private.create_password_reset(p_email text, p_hash bytea, p_ttl_secs integer) EXECUTE",
    "function private.cut_off_sessions(p_staff uuid, p_keep_grant uuid) EXECUTE",
    "function private.enqueue_mail(p_id uuid, p_kind text, p_payload bytea) EXECUTE",
    "function private.forget_invitation_token(p_invitation uuid) EXECUTE",
    "function private.invitation_by_token(p_hash bytea) EXECUTE",
    "function private.mail_failed(p_id uuid, p_error text, p_retry_secs integer, p_give_up boolean) EXECUTE",
    "function private.mail_sent(p_id uuid) EXECUTE",
    "function private.mail_waiting() EXECUTE",
    "function private.password_reset_live(p_hash bytea) EXECUTE",
    "function private.reseal_totp(p_staff uuid, p_legacy bytea, p_sealed bytea) EXECUTE",
    "function private.session_cut_off(p_staff uuid, p_grant uuid, p_started timestamp with time zone) EXECUTE",
    "function private.store_invitation_token(p_hash bytea, p_invitation uuid, p_email text, p_expires timestamp with time zone) EXECUTE",
    "function private.store_oauth_code(p_hash bytea, p_client text, p_staff uuid, p_redirect text, p_challenge text, p_ttl_secs integer, p_mfa boolean) EXECUTE",
    "table public.staff_invitations INSERT",
    "table public.staff_invitations SELECT",
    "table public.staff_invitations(decided_at) UPDATE",
    "table public.staff_invitations(staff_id) UPDATE",
    "table public.staff_invitations(status) UPDATE",
    "function private.mark_payment_intent_checked(p_payment_intent text) EXECUTE",
    "function private.add_platform_data_key(p_version integer, p_wrapped bytea, p_master_key_id text) EXECUTE",
    "function private.platform_data_key(p_version integer) EXECUTE",
    "function private.platform_data_keys_all() EXECUTE",
    "function private.shared_diner_profile(p_identity bytea) EXECUTE",
    "function private.withdraw_diner_profile(p_identity bytea) EXECUTE",
    "table public.diners DELETE",
    "table public.diners INSERT",
    "table public.diners SELECT",
    "table public.diners(allergens) UPDATE",
    "table public.diners(dietary_notes) UPDATE",
    "table public.diners(updated_at) UPDATE",
    "table public.venue_data_keys INSERT",
    "table public.venue_data_keys SELECT",
    "function private.verify_api_token(p_token_hash bytea) EXECUTE",
    "function private.finish_stripe_event(p_id text, p_venue uuid, p_outcome text) EXECUTE",
    "function private.mark_payment_intent_alerted(p_payment_intent text) EXECUTE",
    "function private.payment_intent_route(p_payment_intent text) EXECUTE",
    "function private.register_payment_intent(p_payment_intent text, p_checkout uuid) EXECUTE",
    "function private.register_stripe_account(p_account text) EXECUTE",
    "function private.settle_payment_intent(p_payment_intent text) EXECUTE",
    "function private.stripe_account_venue(p_account text) EXECUTE",
    "function private.unsettled_payment_intents(p_older_than interval, p_limit integer) EXECUTE",
    "table public.checkout_items INSERT",
    "table public.checkout_items SELECT",
    "table public.checkouts INSERT",
    "table public.checkouts SELECT",
    "table public.checkouts(charge_amount_refunded) UPDATE",
    "table public.checkouts(client_secret_hash) UPDATE",
    "table public.checkouts(failure_reason) UPDATE",
    "table public.checkouts(payment_intent_id) UPDATE",
    "table public.checkouts(state_at) UPDATE",
    "table public.checkouts(state_event) UPDATE",
    "table public.checkouts(status) UPDATE",
    "table public.checkouts(updated_at) UPDATE",
    "table public.disputes INSERT",
    "table public.disputes SELECT",
    "table public.disputes(amount_minor) UPDATE",
    "table public.disputes(reason) UPDATE",
    "table public.disputes(state_at) UPDATE",
    "table public.disputes(state_event) UPDATE",
    "table public.disputes(status) UPDATE",
    "table public.disputes(updated_at) UPDATE",
    "table public.order_counters INSERT",
    "table public.order_counters SELECT",
    "table public.order_counters(last_number) UPDATE",
    "table public.orders INSERT",
    "table public.orders SELECT",
    "table public.orders(dispute_status) UPDATE",
    "table public.orders(refund_pending_minor) UPDATE",
    "table public.orders(refunded_minor) UPDATE",
    "table public.orders(status) UPDATE",
    "table public.orders(status_before_refund) UPDATE",
    "table public.orders(updated_at) UPDATE",
    "table public.payments INSERT",
    "table public.payments SELECT",
    "table public.refunds INSERT",
    "table public.refunds SELECT",
    "table public.refunds(state_at) UPDATE",
    "table public.refunds(state_event) UPDATE",
    "table public.refunds(status) UPDATE",
    "table public.refunds(stripe_refund_id) UPDATE",
    "table public.refunds(updated_at) UPDATE",
    "table public.stripe_accounts INSERT",
    "table public.stripe_accounts SELECT",
    "table public.stripe_accounts(charges_enabled) UPDATE",
    "table public.stripe_accounts(details_submitted) UPDATE",
    "table public.stripe_accounts(disabled_reason) UPDATE",
    "table public.stripe_accounts(payouts_enabled) UPDATE",
    "table public.stripe_accounts(requirements_due) UPDATE",
    "table public.stripe_accounts(state_at) UPDATE",
    "table public.stripe_accounts(state_event) UPDATE",
    "table public.stripe_accounts(updated_at) UPDATE",
    "function private.store_stripe_event(p_id text, p_endpoint text, p_type text, p_account text, p_livemode boolean, p_api_version text, p_created bigint, p_raw text) EXECUTE",
    "function private.set_staff_pin(p_staff uuid, p_hash text, p_authority bigint) EXECUTE",
    "function private.record_unreadable_stripe_event(p_id text, p_endpoint text, p_type text, p_reason text, p_raw text) EXECUTE",
    "function private.staff_pin(p_email text) EXECUTE",
    "function private.clients_of_current_venue() EXECUTE",
    "function private.revoke_venue_client(p_id text) EXECUTE",
    "table public.memberships DELETE",
    "table public.memberships INSERT",
    "table public.memberships(permissions) UPDATE",
    "function private.accept_totp_step(p_staff uuid, p_step bigint, p_confirm boolean) EXECUTE",
    "function private.begin_totp(p_staff uuid, p_secret bytea) EXECUTE",
    "function private.disable_totp(p_staff uuid) EXECUTE",
    "function private.replace_recovery_codes(p_staff uuid, p_hashes bytea[]) EXECUTE",
    "function private.staff_email(p_staff uuid) EXECUTE",
    "function private.totp_state(p_staff uuid) EXECUTE",
    "function private.use_recovery_code(p_staff uuid, p_hash bytea) EXECUTE",
    "table public.venue_settings INSERT",
    "table public.venue_settings SELECT",
    "table public.venue_settings(require_mfa_for_elevated) UPDATE",
    "table public.venue_settings(updated_at) UPDATE",
    "function private.auth_retry_after(p_kind text, p_identifier bytea, p_ip inet, p_device text, p_identifier_limit integer, p_ip_limit integer, p_base_secs integer) EXECUTE",
    "function private.record_security_event(p_kind text, p_identifier bytea, p_ip inet, p_detail jsonb) EXECUTE",
    "function private.attach_code_grant(p_hash bytea, p_grant uuid) EXECUTE",
    "function private.authenticate_oauth_client(p_id text, p_secret_hash bytea) EXECUTE",
    "function private.lookup_oauth_token(p_hash bytea) EXECUTE",
    "function private.oauth_client(p_id text) EXECUTE",
    "function private.peek_oauth_code(p_hash bytea) EXECUTE",
    "function private.redeem_oauth_code(p_hash bytea) EXECUTE",
    "function private.revoke_oauth_token(p_hash bytea) EXECUTE",
    "function private.staff_login(p_email text) EXECUTE",
    "function private.store_oauth_token(p_hash bytea, p_grant uuid, p_kind text, p_ttl_secs integer) EXECUTE",
    "function private.use_refresh_token(p_hash bytea) EXECUTE",
    "function private.venues_of_staff(p_staff uuid) EXECUTE",
    "function public.staff_of_current_venue() EXECUTE",
    "table public.oauth_grants INSERT",
    "table public.oauth_grants SELECT",
    "table public.oauth_grants(last_used_at) UPDATE",
    "table public.oauth_grants(revoked_at) UPDATE",
    "table public.oauth_grants(revoked_reason) UPDATE",
    "database CONNECT",
    "function private.lookup_api_token(p_token_hash bytea) EXECUTE",
    "function public.audit_canonical(e audit_events) EXECUTE",
    "function public.current_venue_id() EXECUTE",
    "schema private USAGE",
    "schema public USAGE",
    "table public._sqlx_migrations SELECT",
    "table public.api_tokens SELECT",
    "table public.audit_events INSERT",
    "table public.audit_events SELECT",
    "table public.memberships SELECT",
    "table public.menu_categories DELETE",
    "table public.menu_categories INSERT",
    "table public.menu_categories SELECT",
    "table public.menu_categories(name) UPDATE",
    "table public.menu_categories(position) UPDATE",
    "table public.tax_rates DELETE",
    "table public.tax_rates INSERT",
    "table public.tax_rates SELECT",
    "table public.tax_rates(name) UPDATE",
    "table public.tax_rates(rate_ppm) UPDATE",
    "table public.tax_rates(updated_at) UPDATE",
    "table public.menu_items DELETE",
    "table public.menu_items INSERT",
    "table public.menu_items SELECT",
    "table public.menu_items(allergens) UPDATE",
    "table public.menu_items(available) UPDATE",
    "table public.menu_items(category_id) UPDATE",
    "table public.menu_items(description) UPDATE",
    "table public.menu_items(name) UPDATE",
    "table public.menu_items(position) UPDATE",
    "table public.menu_items(price_minor) UPDATE",
    "table public.menu_items(updated_at) UPDATE",
    "table public.venues(currency) SELECT",
    "table public.venues(id) SELECT",
    "table public.venues(name) SELECT",
    "table public.venues(slug) SELECT",
];

/// One table or view of the catalogue with its isolation properties.
#[derive(Debug, sqlx::FromRow)]
struct Relation {
    name: String,
    kind: String,
    rls: bool,
    forced: bool,
    policies: i64,
    pk_first: Option<String>,
    expressions: Vec<String>,
    options: Option<Vec<String>>,
}

const USER_SCHEMAS: &str = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'";

#[tokio::test]
async fn every_relation_is_tenant_scoped_or_listed_as_platform_level() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.owner).await.unwrap();
    let rows: Vec<Relation> = sqlx::query_as(&format!(
        "SELECT n.nspname || '.' || c.relname AS name, c.relkind::text AS kind, c.relrowsecurity AS rls, c.relforcerowsecurity AS forced, \
           (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies, \
           (SELECT a.attname::text FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0] \
             WHERE i.indrelid = c.oid AND i.indisprimary) AS pk_first, \
           ARRAY(SELECT pg_get_expr(p.polqual, p.polrelid) || ' / ' || COALESCE(pg_get_expr(p.polwithcheck, p.polrelid), '') \
             FROM pg_policy p WHERE p.polrelid = c.oid) AS expressions, \
           c.reloptions::text[] AS options \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND {USER_SCHEMAS} ORDER BY 1"
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(rows.len() >= 11, "catalogue looks empty: {rows:?}");
    let mut problems = Vec::new();
    for Relation { name, kind, rls, forced, policies, pk_first, expressions, options } in rows {
        if kind == "v" || kind == "m" {
            let invoker = options.unwrap_or_default().iter().any(|o| o == "security_invoker=true");
            if !invoker {
                problems.push(format!("{name}: view is not security_invoker"));
            }
            continue;
        }
        if PLATFORM_LEVEL.contains(&name.as_str()) {
            continue;
        }
        if !(rls && forced) {
            problems.push(format!("{name}: row-level security not enabled and forced"));
        }
        if policies == 0 || !expressions.iter().all(|e| e.matches("current_venue_id()").count() == 2) {
            problems.push(format!(
                "{name}: no venue policy on current_venue_id() for USING and WITH CHECK: {expressions:?}"
            ));
        }
        if pk_first.as_deref() != Some("venue_id") {
            problems.push(format!("{name}: primary key does not start with venue_id ({pk_first:?})"));
        }
    }
    assert!(
        problems.is_empty(),
        "tables that are neither tenant-scoped nor listed in PLATFORM_LEVEL:\n{}",
        problems.join("\n")
    );
}

#[tokio::test]
async fn security_definer_functions_pin_their_search_path() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.owner).await.unwrap();
    let unpinned: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
         WHERE {USER_SCHEMAS} AND p.prosecdef \
           AND NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c WHERE c LIKE 'search_path=%')"
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(unpinned.is_empty(), "SECURITY DEFINER functions without a pinned search_path: {unpinned:?}");
}

#[tokio::test]
async fn the_app_role_holds_exactly_the_privileges_deliberately_granted() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.owner).await.unwrap();
    let role = "venueql_app";
    let actual: Vec<String> = sqlx::query_scalar(&format!(
        "WITH rels AS (SELECT c.oid, n.nspname || '.' || c.relname AS name, c.relkind FROM pg_class c \
                       JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r','p','v','m','f') AND {USER_SCHEMAS}), \
              privs(p) AS (VALUES ('SELECT'), ('INSERT'), ('UPDATE'), ('DELETE'), ('TRUNCATE'), ('REFERENCES'), ('TRIGGER')) \
         SELECT 'table ' || r.name || ' ' || privs.p FROM rels r, privs WHERE has_table_privilege($1, r.oid, privs.p) \
         UNION ALL \
         SELECT 'table ' || r.name || '(' || a.attname || ') ' || privs.p FROM rels r \
           JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped, privs \
           WHERE privs.p IN ('SELECT', 'INSERT', 'UPDATE', 'REFERENCES') \
             AND NOT has_table_privilege($1, r.oid, privs.p) AND has_column_privilege($1, r.oid, a.attnum, privs.p) \
         UNION ALL \
         SELECT 'sequence ' || n.nspname || '.' || c.relname || ' ' || p FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, \
           unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p WHERE c.relkind = 'S' AND {USER_SCHEMAS} AND has_sequence_privilege($1, c.oid, p) \
         UNION ALL \
         SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ') EXECUTE' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
           WHERE {USER_SCHEMAS} AND has_function_privilege($1, p.oid, 'EXECUTE') \
         UNION ALL \
         SELECT 'schema ' || n.nspname || ' ' || p FROM pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) p \
           WHERE {USER_SCHEMAS} AND has_schema_privilege($1, n.oid, p) \
         UNION ALL \
         SELECT 'database ' || p FROM unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY']) p \
           WHERE has_database_privilege($1, current_database(), p) \
         ORDER BY 1"
    ))
    .bind(role)
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let unexpected: Vec<&String> = actual.iter().filter(|p| !APP_PRIVILEGES.contains(&p.as_str())).collect();
    let missing: Vec<&&str> = APP_PRIVILEGES.iter().filter(|p| !actual.contains(&p.to_string())).collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "app role privileges differ from APP_PRIVILEGES.\nnot deliberately granted: {unexpected:#?}\nexpected but missing: {missing:#?}"
    );
}

#[tokio::test]
async fn the_app_role_is_no_superuser_has_no_bypassrls_and_owns_nothing() {
    let app = TestApp::spawn().await;
    let pool = venueql::db::pool(&app.urls.app, 1).await.unwrap();
    venueql::db::check_app_role(&pool).await.expect("the app role passes the start-up check");
}

/// A unique constraint, unique index or foreign key, with its columns by name.
#[derive(sqlx::FromRow, Debug)]
struct KeyColumns {
    table_name: String,
    key: String,
    kind: String,
    columns: Vec<String>,
    referenced: Option<String>,
    referenced_columns: Option<Vec<String>>,
}

/// Private tables without row-level security (reached only through SECURITY DEFINER
/// functions) that are keyed by venue like a tenant table: distributed with them.
const VENUE_KEYED_PRIVATE: &[&str] = &["private.staff_pins"];

/// Private tables that find a credential's venue from its hash before any venue is known:
/// keyed by the hash, each row naming its venue and its tenant row (venue_id included).
/// docs/SCALING.md says what becomes of them under Citus.
const CREDENTIAL_ROUTES: &[&str] = &["private.api_token_hashes", "private.invitation_tokens", "private.oauth_tokens"];

/// docs/SCALING.md's last step, Citus with `venue_id` as the distribution column, is
/// configuration only if every tenant table is already shaped for it: its primary key and
/// every unique constraint or index include `venue_id`, and every foreign key between
/// tenant tables carries `venue_id` to `venue_id` (so no row can point into another
/// venue, and each join stays on one shard). Platform tables may be referenced (they
/// become reference tables); only the listed credential routes reference a tenant table,
/// and they too carry `venue_id` to `venue_id`.
#[tokio::test]
async fn every_tenant_table_is_ready_to_be_distributed_by_venue_id() {
    let app = TestApp::spawn().await;
    let mut conn = PgConnection::connect(&app.urls.owner).await.unwrap();
    let keys: Vec<KeyColumns> = sqlx::query_as(&format!(
        "WITH keys AS ( \
           SELECT c.oid AS relid, i.indexrelid::regclass::text AS key, \
                  CASE WHEN i.indisprimary THEN 'primary key' ELSE 'unique' END AS kind, \
                  i.indkey::int2[] AS attnums, NULL::oid AS confrelid, NULL::int2[] AS confkey \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid WHERE i.indisunique \
           UNION ALL \
           SELECT k.conrelid, k.conname::text, 'foreign key', k.conkey, k.confrelid, k.confkey \
             FROM pg_constraint k WHERE k.contype = 'f') \
         SELECT n.nspname || '.' || c.relname AS table_name, keys.key, keys.kind, \
                ARRAY(SELECT a.attname::text FROM unnest(keys.attnums) WITH ORDINALITY u(num, ord) \
                      JOIN pg_attribute a ON a.attrelid = keys.relid AND a.attnum = u.num ORDER BY u.ord) AS columns, \
                (SELECT rn.nspname || '.' || r.relname FROM pg_class r JOIN pg_namespace rn ON rn.oid = r.relnamespace \
                  WHERE r.oid = keys.confrelid) AS referenced, \
                CASE WHEN keys.confrelid IS NOT NULL THEN ARRAY(SELECT a.attname::text \
                      FROM unnest(keys.confkey) WITH ORDINALITY u(num, ord) \
                      JOIN pg_attribute a ON a.attrelid = keys.confrelid AND a.attnum = u.num ORDER BY u.ord) END \
                  AS referenced_columns \
           FROM keys JOIN pg_class c ON c.oid = keys.relid JOIN pg_namespace n ON n.oid = c.relnamespace \
          WHERE c.relkind IN ('r', 'p') AND {USER_SCHEMAS} ORDER BY 1, 2"
    ))
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let is_tenant = |table: &str| !PLATFORM_LEVEL.contains(&table) || VENUE_KEYED_PRIVATE.contains(&table);
    let mut problems = Vec::new();
    let mut checked = 0;
    for key in &keys {
        let venue_at = key.columns.iter().position(|c| c == "venue_id");
        let from_tenant_or_route = is_tenant(&key.table_name) || CREDENTIAL_ROUTES.contains(&key.table_name.as_str());
        match (key.kind.as_str(), is_tenant(&key.table_name), key.referenced.as_deref()) {
            ("foreign key", _, Some(target)) if is_tenant(target) && from_tenant_or_route => {
                checked += 1;
                let target_at = key.referenced_columns.as_ref().and_then(|c| c.iter().position(|c| c == "venue_id"));
                if venue_at.is_none() || venue_at != target_at {
                    problems.push(format!(
                        "{}: foreign key {} ({:?}) -> {target} ({:?}) does not carry venue_id to venue_id",
                        key.table_name, key.key, key.columns, key.referenced_columns
                    ));
                }
            }
            ("foreign key", false, Some(target)) if is_tenant(target) => problems.push(format!(
                "{}: platform table references tenant table {target} ({}): a reference table cannot point into a \
                 distributed one (a credential route belongs in CREDENTIAL_ROUTES and docs/SCALING.md)",
                key.table_name, key.key
            )),
            ("foreign key", _, _) => {}
            (_, true, _) => {
                checked += 1;
                if venue_at.is_none() {
                    problems.push(format!(
                        "{}: {} {} ({:?}) lacks venue_id",
                        key.table_name, key.kind, key.key, key.columns
                    ));
                }
            }
            _ => {}
        }
    }
    assert!(checked >= 20, "too few tenant keys seen ({checked}): {keys:?}");
    assert!(problems.is_empty(), "not distribution-ready:\n{}", problems.join("\n"));
}
