//! Retention: personal data kept only as long as it serves its purpose (GDPR Art. 5(1)(c)
//! data minimisation and 5(1)(e) storage limitation). A periodic job deletes, venue by
//! venue through a [`VenueTx`] (so row-level security bounds every statement to one
//! venue):
//!
//! - the raw bodies of Stripe events (they may carry a customer's name, email and billing
//!   address) once the event is long applied; the id, type and outcome stay so that a late
//!   duplicate is still recognised;
//! - abandoned checkouts (expired or cancelled, never paid), their lines and their
//!   PaymentIntent route: a basket nobody paid for is no business record;
//! - unverified diner statements (a diner who never proved their email): they exist for
//!   the kitchen alert of their orders, so they go once no checkout of theirs is pending
//!   and no order of theirs is still open.
//!
//! Each venue pass that deleted something writes one audit row with the counts. Raw
//! bodies of events never routed to a venue are dropped by one platform-level statement.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// How long each kind of data is kept (`RETENTION_*`).
#[derive(Clone, Copy, Debug)]
pub struct RetentionConfig {
    /// `RETENTION_STRIPE_EVENTS_DAYS` (30): raw Stripe event bodies, from receipt.
    pub stripe_events: Duration,
    /// `RETENTION_ABANDONED_CHECKOUTS_DAYS` (30): expired or cancelled checkouts, from
    /// their last change.
    pub abandoned_checkouts: Duration,
    /// `RETENTION_UNVERIFIED_DINERS_DAYS` (30): unverified diner statements, from their
    /// last change (and only once none of their orders is open).
    pub unverified_diners: Duration,
    /// `RETENTION_INTERVAL_SECS` (3600): how often the server runs the job; 0 turns it off
    /// (then run `venueql retention run` from a scheduler).
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        let days = |n: u64| Duration::from_secs(n * 24 * 3600);
        RetentionConfig {
            stripe_events: days(30),
            abandoned_checkouts: days(30),
            unverified_diners: days(30),
            interval: Duration::from_secs(3600),
        }
    }
}

/// What one pass deleted at one venue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VenuePurge {
    /// The venue.
    pub venue_id: Uuid,
    /// Raw Stripe event bodies dropped.
    pub stripe_event_bodies: u64,
    /// Abandoned checkouts deleted (with their lines).
    pub abandoned_checkouts: u64,
    /// Unverified diner statements deleted.
    pub unverified_diners: u64,
}

impl VenuePurge {
    fn is_empty(&self) -> bool {
        self.stripe_event_bodies == 0 && self.abandoned_checkouts == 0 && self.unverified_diners == 0
    }
}

/// What one pass deleted.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Per venue, only venues where something was deleted.
    pub venues: Vec<VenuePurge>,
    /// Raw bodies of events never routed to a venue (platform-level).
    pub unrouted_stripe_event_bodies: u64,
    /// Venues whose pass failed (retried next time); the others still ran.
    pub errors: usize,
}

/// One pass over every venue, then the unrouted events.
pub async fn run_once(db: &Db, config: &RetentionConfig) -> Result<Report, AppError> {
    let venues: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM venues ORDER BY id").fetch_all(db.platform_level()).await?;
    let mut report = Report::default();
    for venue in venues {
        match run_for_venue(db, VenueId::from_uuid(venue), config).await {
            Ok(purge) if purge.is_empty() => {}
            Ok(purge) => report.venues.push(purge),
            Err(error) => {
                tracing::warn!(venue = %venue, error = ?error, "retention pass failed for a venue");
                report.errors += 1;
            }
        }
    }
    let before = cutoff(config.stripe_events)?;
    let unrouted: i32 = sqlx::query_scalar("SELECT private.purge_unrouted_stripe_event_bodies($1)")
        .bind(before)
        .fetch_one(db.platform_level())
        .await?;
    report.unrouted_stripe_event_bodies = u64::try_from(unrouted).unwrap_or(0);
    Ok(report)
}

/// One venue's pass, in one venue transaction with its audit row.
pub async fn run_for_venue(db: &Db, venue: VenueId, config: &RetentionConfig) -> Result<VenuePurge, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let purge = VenuePurge {
        venue_id: venue.as_uuid(),
        stripe_event_bodies: purge_stripe_event_bodies(&mut tx, config.stripe_events).await?,
        abandoned_checkouts: delete_abandoned_checkouts(&mut tx, config.abandoned_checkouts).await?,
        unverified_diners: delete_unverified_diners(&mut tx, config.unverified_diners).await?,
    };
    if !purge.is_empty() {
        let change = Change {
            action: "retention.purged",
            target_type: "venue",
            target_id: venue.to_string(),
            before: None,
            after: Some(json!({
                "stripe_event_bodies": purge.stripe_event_bodies,
                "abandoned_checkouts": purge.abandoned_checkouts,
                "unverified_diners": purge.unverified_diners,
                "kept_days": {
                    "stripe_events": days(config.stripe_events),
                    "abandoned_checkouts": days(config.abandoned_checkouts),
                    "unverified_diners": days(config.unverified_diners),
                },
            })),
        };
        audit::record(&mut tx, &Who::operator("venueql:retention"), change).await?;
    }
    tx.commit().await?;
    Ok(purge)
}

fn days(period: Duration) -> f64 {
    period.as_secs_f64() / 86_400.0
}

fn cutoff(kept: Duration) -> Result<chrono::DateTime<chrono::Utc>, AppError> {
    let kept = chrono::Duration::from_std(kept).map_err(|_| AppError::internal("retention period out of range"))?;
    Ok(chrono::Utc::now() - kept)
}

async fn purge_stripe_event_bodies(tx: &mut VenueTx, kept: Duration) -> Result<u64, AppError> {
    let dropped: i32 = sqlx::query_scalar("SELECT private.purge_stripe_event_bodies($1)")
        .bind(cutoff(kept)?)
        .fetch_one(tx.conn())
        .await?;
    Ok(u64::try_from(dropped).unwrap_or(0))
}

/// Expired and cancelled checkouts never paid: a `failed` one may still be paid with the
/// same PaymentIntent, so it waits until the payment job expires it.
async fn delete_abandoned_checkouts(tx: &mut VenueTx, kept: Duration) -> Result<u64, AppError> {
    let abandoned: Vec<Uuid> = sqlx::query_scalar(
        "SELECT c.id FROM checkouts c WHERE c.status IN ('expired', 'canceled') AND c.updated_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.checkout_id = c.id) \
           AND NOT EXISTS (SELECT 1 FROM refunds r WHERE r.checkout_id = c.id) \
           AND NOT EXISTS (SELECT 1 FROM disputes d WHERE d.checkout_id = c.id) \
         ORDER BY c.id FOR UPDATE",
    )
    .bind(cutoff(kept)?)
    .fetch_all(tx.conn())
    .await?;
    if abandoned.is_empty() {
        return Ok(0);
    }
    sqlx::query("DELETE FROM checkout_items WHERE checkout_id = ANY($1)").bind(&abandoned).execute(tx.conn()).await?;
    sqlx::query("SELECT private.forget_payment_intents($1)").bind(&abandoned).execute(tx.conn()).await?;
    let deleted = sqlx::query("DELETE FROM checkouts WHERE id = ANY($1)").bind(&abandoned).execute(tx.conn()).await?;
    Ok(deleted.rows_affected())
}

/// Diners who never proved their email, untouched for the period, with no pending
/// checkout and no open order (whose kitchen alert still needs what they said).
async fn delete_unverified_diners(tx: &mut VenueTx, kept: Duration) -> Result<u64, AppError> {
    let deleted = sqlx::query(
        "DELETE FROM diners d WHERE d.verified_at IS NULL AND d.updated_at < $1 \
           AND NOT EXISTS (SELECT 1 FROM checkouts c WHERE c.diner_id = d.id AND c.status IN ('creating', 'pending', 'failed')) \
           AND NOT EXISTS (SELECT 1 FROM orders o WHERE o.diner_id = d.id AND o.status IN ('placed', 'preparing', 'ready'))",
    )
    .bind(cutoff(kept)?)
    .execute(tx.conn())
    .await?;
    Ok(deleted.rows_affected())
}

/// Runs [`run_once`] every `config.interval` (when not zero) until the process ends.
pub fn spawn_periodic(db: Db, config: RetentionConfig) {
    if config.interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match run_once(&db, &config).await {
                Ok(report) if !report.venues.is_empty() || report.unrouted_stripe_event_bodies > 0 => {
                    tracing::info!(?report, "retention pass")
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(error = ?error, "retention pass failed"),
            }
        }
    });
}
