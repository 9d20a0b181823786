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
use crate::config::RetentionConfig;
use crate::error::AppError;
use crate::payments::{checkout, events};
use crate::tenancy::{Db, VenueId};

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
    let venues = db.scan_venues("venueql:retention", "delete what is past its retention period").await?;
    let mut report = Report::default();
    for venue in venues {
        match run_for_venue(db, venue, config).await {
            Ok(purge) if purge.is_empty() => {}
            Ok(purge) => report.venues.push(purge),
            Err(error) => {
                tracing::warn!(venue = %venue, error = ?error, "retention pass failed for a venue");
                report.errors += 1;
            }
        }
    }
    report.unrouted_stripe_event_bodies = events::purge_unrouted_bodies(db, cutoff(config.stripe_events)?).await?;
    Ok(report)
}

/// One venue's pass, in one venue transaction with its audit row; each room deletes its
/// own rows (payments: event bodies and checkouts; diners: statements no open order or
/// checkout needs).
pub async fn run_for_venue(db: &Db, venue: VenueId, config: &RetentionConfig) -> Result<VenuePurge, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let stripe_event_bodies = events::purge_bodies(&mut tx, cutoff(config.stripe_events)?).await?;
    let abandoned_checkouts = checkout::delete_abandoned(&mut tx, cutoff(config.abandoned_checkouts)?).await?;
    let mut still_needed = crate::orders::diners_with_open_orders(&mut tx).await?;
    still_needed.extend(checkout::diners_with_open_checkouts(&mut tx).await?);
    let unverified_diners =
        crate::diners::delete_unverified(&mut tx, cutoff(config.unverified_diners)?, &still_needed).await?;
    let purge = VenuePurge { venue_id: venue.as_uuid(), stripe_event_bodies, abandoned_checkouts, unverified_diners };
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
