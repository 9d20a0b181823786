//! Stripe Connect Express onboarding: each venue gets one connected account (created once;
//! later calls reuse it) and an Account Link to finish onboarding at Stripe.
//! `account.updated` events keep charges/payouts/details/requirements current; a venue
//! takes payments only while Stripe says its charges are enabled.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::Payments;
use super::objects::{self, Account, AccountLink};
use super::stripe::{Params, metadata};
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::orders::refunds_and_disputes::Stamp;
use crate::tenancy::{Db, VenueId, VenueTx};

/// A venue's connected account and what Stripe last said about it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AccountState {
    /// `acct_…`.
    pub account_id: String,
    /// Whether the account can take charges.
    pub charges_enabled: bool,
    /// Whether Stripe pays out to the venue.
    pub payouts_enabled: bool,
    /// Whether the venue finished Stripe's onboarding form.
    pub details_submitted: bool,
    /// `requirements.currently_due`.
    pub requirements_due: Vec<String>,
    /// `requirements.disabled_reason`.
    pub disabled_reason: Option<String>,
}

/// The venue's account, if it has one.
pub async fn find(tx: &mut VenueTx) -> Result<Option<AccountState>, AppError> {
    Ok(sqlx::query_as(
        "SELECT account_id, charges_enabled, payouts_enabled, details_submitted, requirements_due, disabled_reason \
         FROM stripe_accounts",
    )
    .fetch_optional(tx.conn())
    .await?)
}

/// What `startStripeOnboarding` returns.
#[derive(Clone, Debug)]
pub struct OnboardingLink {
    /// The venue's connected account.
    pub account_id: String,
    /// Stripe's hosted onboarding page (valid for a few minutes).
    pub url: String,
}

fn check_url(name: &str, raw: &str) -> Result<(), AppError> {
    let parsed = url::Url::parse(raw).map_err(|_| AppError::bad_input(format!("{name} must be an absolute URL")))?;
    if !matches!(parsed.scheme(), "https" | "http") || raw.len() > 2000 {
        return Err(AppError::bad_input(format!("{name} must be an http(s) URL of at most 2000 characters")));
    }
    Ok(())
}

/// Creates the venue's Express account once, then returns a fresh Account Link.
pub async fn start_onboarding(
    db: &Db,
    payments: &Payments,
    venue: VenueId,
    who: &Who,
    return_url: &str,
    refresh_url: &str,
) -> Result<OnboardingLink, AppError> {
    check_url("returnUrl", return_url)?;
    check_url("refreshUrl", refresh_url)?;
    let client = payments.client()?;
    let mut tx = db.venue_tx(venue).await?;
    let existing = find(&mut tx).await?;
    tx.commit().await?;
    let account_id = match existing {
        Some(account) => account.account_id,
        None => create_account(db, payments, venue, who).await?,
    };
    let params: Params = vec![
        ("account".into(), account_id.clone()),
        ("refresh_url".into(), refresh_url.into()),
        ("return_url".into(), return_url.into()),
        ("type".into(), "account_onboarding".into()),
    ];
    // A fresh link per call (links are single-use); retries of this call reuse the key.
    let key = format!("venueql-account-link-{}", uuid::Uuid::new_v4());
    let link: AccountLink = objects::read("account link", &client.post("/v1/account_links", &key, &params).await?)
        .map_err(AppError::internal)?;
    let url = link.url;
    // Each link hands the venue's payouts set-up to whoever opens it: audited.
    let mut tx = db.venue_tx(venue).await?;
    let change = Change {
        action: "stripe_onboarding.link_created",
        target_type: "stripe_account",
        target_id: account_id.clone(),
        before: None,
        after: Some(json!({ "return_url": return_url, "refresh_url": refresh_url })),
    };
    audit::record(&mut tx, who, change).await?;
    tx.commit().await?;
    Ok(OnboardingLink { account_id, url })
}

async fn create_account(db: &Db, payments: &Payments, venue: VenueId, who: &Who) -> Result<String, AppError> {
    let mut params: Params = vec![
        ("type".into(), "express".into()),
        ("capabilities[card_payments][requested]".into(), "true".into()),
        ("capabilities[transfers][requested]".into(), "true".into()),
    ];
    metadata(&mut params, &[("venue_id", venue.to_string())]);
    // One account per venue, ever: concurrent first calls get the same account from Stripe.
    let account = payments.client()?.post("/v1/accounts", &format!("venueql-account-{venue}"), &params).await?;
    let account: Account = objects::read("account", &account).map_err(AppError::internal)?;
    let account_id = account.id.as_str();
    let mut tx = db.venue_tx(venue).await?;
    let inserted = sqlx::query(
        "INSERT INTO stripe_accounts (venue_id, account_id) VALUES ($1, $2) ON CONFLICT (venue_id) DO NOTHING",
    )
    .bind(venue.as_uuid())
    .bind(account_id)
    .execute(tx.conn())
    .await?
    .rows_affected();
    if inserted == 1 {
        sqlx::query("SELECT private.register_stripe_account($1)").bind(account_id).execute(tx.conn()).await?;
        // The state Stripe created the account with; any event about it is newer.
        let created = account.created.and_then(|at| DateTime::from_timestamp(at, 0)).unwrap_or_default();
        store_state(&mut tx, &account, created, "").await?;
        let change = Change {
            action: "stripe_account.created",
            target_type: "stripe_account",
            target_id: account_id.to_string(),
            before: None,
            after: Some(json!({ "type": "express" })),
        };
        audit::record(&mut tx, who, change).await?;
    }
    let stored = find(&mut tx).await?.map(|a| a.account_id).unwrap_or_else(|| account_id.to_string());
    tx.commit().await?;
    Ok(stored)
}

/// Stores what an account object says, unless a newer state is stored; true if it was.
/// A field the object leaves out (Stripe requires only `id`) keeps its stored value.
async fn store_state(tx: &mut VenueTx, account: &Account, at: DateTime<Utc>, key: &str) -> Result<bool, AppError> {
    let requirements = account.requirements.clone();
    let said = requirements.is_some();
    let requirements = requirements.unwrap_or_default();
    let changed = sqlx::query(
        "UPDATE stripe_accounts SET charges_enabled = COALESCE($2, charges_enabled), \
             payouts_enabled = COALESCE($3, payouts_enabled), details_submitted = COALESCE($4, details_submitted), \
             requirements_due = CASE WHEN $9 THEN $5 ELSE requirements_due END, \
             disabled_reason = CASE WHEN $9 THEN $6 ELSE disabled_reason END, \
             state_at = $7, state_event = $8, updated_at = now() \
         WHERE account_id = $1 AND (state_at, state_event) < ($7, $8)",
    )
    .bind(&account.id)
    .bind(account.charges_enabled)
    .bind(account.payouts_enabled)
    .bind(account.details_submitted)
    .bind(requirements.currently_due.unwrap_or_default())
    .bind(requirements.disabled_reason)
    .bind(at)
    .bind(key)
    .bind(said)
    .execute(tx.conn())
    .await?
    .rows_affected();
    Ok(changed == 1)
}

/// `account.updated`: the newest account state wins, whatever the arrival order.
pub(super) async fn apply_account(
    tx: &mut VenueTx,
    who: &Who,
    account: &Account,
    stamp: &Stamp,
) -> Result<String, AppError> {
    if !store_state(tx, account, stamp.at, &stamp.key(0)).await? {
        return Ok("no change: a newer account state is recorded".into());
    }
    let due = account.requirements.as_ref().and_then(|r| r.currently_due.clone()).unwrap_or_default();
    let change = Change {
        action: "stripe_account.updated",
        target_type: "stripe_account",
        target_id: account.id.clone(),
        before: None,
        after: Some(json!({ "charges_enabled": account.charges_enabled, "payouts_enabled": account.payouts_enabled,
            "details_submitted": account.details_submitted, "requirements_due": due })),
    };
    audit::record(tx, who, change).await?;
    let charges = account.charges_enabled.map_or("not said".to_string(), |enabled| enabled.to_string());
    Ok(format!("account updated (charges enabled: {charges})"))
}
