//! Critical alerts. An alert enters the outbox (`private.alert_events`) in the
//! transaction of the event it reports, so it exists exactly when the event does. A
//! worker in every server process turns waiting events into deliveries, rate-limited per
//! (kind, venue): the first at once, then one digest with counts per `ALERT_DIGEST_SECS`
//! while events keep coming (`private.plan_alerts`). Deliveries go to `ALERT_WEBHOOK_URL`
//! as signed JSON with a Slack-compatible `text`, retried with backoff until the receiver
//! takes them, and each also becomes a Sentry message (kind, venue id and counts only).

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use secrecy::ExposeSecret;
use sha2::Sha256;
use uuid::Uuid;

use crate::config::AlertSettings;
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// What kind of critical event an alert reports (SPEC §7 and issue 15).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    /// A rotated-out refresh token was presented again (its family is revoked).
    RefreshTokenReuse,
    /// Failed sign-ins triggered a lockout delay.
    Lockout,
    /// A credential of one venue asked for another venue and was refused.
    CrossVenueRefused,
    /// Someone was granted permissions that manage staff, money or credentials.
    ElevatedGrant,
    /// Many webhook signature failures in a short time.
    SignatureFailureBurst,
    /// Stripe says a checkout was paid but no order exists.
    PaidWithoutOrder,
    /// A payment did not match its checkout (amount, currency, venue).
    PaymentMismatch,
    /// A diner opened or closed a dispute (chargeback).
    Dispute,
    /// A venue's data key or the master key was rotated.
    KeyRotation,
    /// A venue was offboarded (its data keys destroyed).
    VenueOffboarded,
    /// A refund of a large share of an order was requested.
    LargeRefund,
    /// A verified Stripe event could not be read (not acknowledged: Stripe retries).
    StripeEventUnreadable,
}

impl AlertKind {
    /// The kind's name in the outbox, the webhook payload and Sentry.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::RefreshTokenReuse => "refresh_token_reuse",
            AlertKind::Lockout => "lockout",
            AlertKind::CrossVenueRefused => "cross_venue_refused",
            AlertKind::ElevatedGrant => "elevated_grant",
            AlertKind::SignatureFailureBurst => "signature_failure_burst",
            AlertKind::PaidWithoutOrder => "paid_without_order",
            AlertKind::PaymentMismatch => "payment_mismatch",
            AlertKind::Dispute => "dispute",
            AlertKind::KeyRotation => "key_rotation",
            AlertKind::VenueOffboarded => "venue_offboarded",
            AlertKind::LargeRefund => "large_refund",
            AlertKind::StripeEventUnreadable => "stripe_event_unreadable",
        }
    }
}

/// Puts an alert for the transaction's venue in the outbox (commits with the event).
/// `summary` names ids and kinds only, never personal data.
pub async fn raise_in(tx: &mut VenueTx, kind: AlertKind, summary: &str) -> Result<(), AppError> {
    sqlx::query("SELECT private.raise_alert($1, $2, $3)")
        .bind(kind.as_str())
        .bind(tx.venue().as_uuid())
        .bind(summary)
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Puts an alert in the outbox outside any venue transaction (events of the platform, or
/// of a venue known only by id, such as a burst of bad webhook signatures).
pub async fn raise(db: &Db, kind: AlertKind, venue: Option<VenueId>, summary: &str) -> Result<(), AppError> {
    sqlx::query("SELECT private.raise_alert($1, $2, $3)")
        .bind(kind.as_str())
        .bind(venue.map(|v| v.as_uuid()))
        .bind(summary)
        .execute(db.platform_level())
        .await?;
    Ok(())
}

/// Counts events of one kind in fixed windows and says when a window's count reaches the
/// threshold (once per window): turns many small failures into one critical event.
pub struct Burst {
    threshold: u32,
    window: Duration,
    state: std::sync::Mutex<(std::time::Instant, u32)>,
}

impl Burst {
    /// A counter of `threshold` events per `window`.
    pub fn new(threshold: u32, window: Duration) -> Burst {
        Burst { threshold, window, state: std::sync::Mutex::new((std::time::Instant::now(), 0)) }
    }

    /// Counts one event; `Some(count)` when this one reaches the threshold.
    pub fn hit(&self) -> Option<u32> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.0.elapsed() >= self.window {
            *state = (std::time::Instant::now(), 0);
        }
        state.1 += 1;
        (state.1 == self.threshold).then_some(state.1)
    }
}

/// One delivery as claimed from the outbox.
#[derive(sqlx::FromRow, Debug)]
struct Delivery {
    id: i64,
    kind: String,
    venue_id: Option<Uuid>,
    digest: bool,
    events: i32,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    summary: String,
    attempts: i32,
}

impl Delivery {
    /// The message people read (Slack's `text`): no personal data, ids only.
    fn text(&self) -> String {
        let place = self.venue_id.map_or_else(|| "the platform".to_string(), |v| format!("venue {v}"));
        if self.digest {
            format!(
                ":rotating_light: venueql critical: {} more `{}` at {place} between {} and {} (last: {})",
                self.events,
                self.kind,
                self.first_at.format("%H:%M:%S"),
                self.last_at.format("%H:%M:%S"),
                self.summary
            )
        } else {
            format!(":rotating_light: venueql critical: `{}` at {place}: {}", self.kind, self.summary)
        }
    }

    fn payload(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind,
            "venue_id": self.venue_id,
            "digest": self.digest,
            "count": self.events,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "summary": self.summary,
            "text": self.text(),
        })
    }
}

/// The `Venueql-Signature` header of a delivery: `t=<unix seconds>,v1=<hex
/// HMAC-SHA256(secret, "<t>.<body>")>` (the scheme Stripe uses for its webhooks, so
/// receivers can reuse their verifier).
pub fn signature_header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// How long to wait before the next attempt: 1 s doubling per attempt, at most 5 min.
fn backoff(attempts: i32) -> Duration {
    Duration::from_secs(1u64 << attempts.clamp(1, 9).saturating_sub(1)).min(Duration::from_secs(300))
}

/// Plans and delivers alerts for one server process.
pub struct AlertWorker {
    db: Db,
    settings: AlertSettings,
    http: reqwest::Client,
}

impl AlertWorker {
    /// A worker over the app role's database handle.
    pub fn new(db: Db, settings: AlertSettings) -> AlertWorker {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("HTTP client");
        AlertWorker { db, settings, http }
    }

    /// One round: turns waiting events into deliveries (reporting each new one to Sentry
    /// and the log), then sends what is due. Returns how many deliveries were attempted.
    pub async fn run_once(&self) -> Result<usize, AppError> {
        let digest_secs = i32::try_from(self.settings.digest.as_secs()).unwrap_or(i32::MAX).max(1);
        let planned: Vec<Delivery> = sqlx::query_as(
            "SELECT id, kind, venue_id, digest, events, first_at, last_at, summary, attempts FROM private.plan_alerts($1)",
        )
        .bind(digest_secs)
        .fetch_all(self.db.platform_level())
        .await?;
        for delivery in &planned {
            report(delivery);
        }
        let due: Vec<Delivery> = sqlx::query_as(
            "SELECT id, kind, venue_id, digest, events, first_at, last_at, summary, attempts \
             FROM private.claim_alert_deliveries(5, 60)",
        )
        .fetch_all(self.db.platform_level())
        .await?;
        for delivery in &due {
            match self.send(delivery).await {
                Ok(()) => {
                    sqlx::query("SELECT private.alert_delivered($1)")
                        .bind(delivery.id)
                        .execute(self.db.platform_level())
                        .await?;
                }
                Err(error) => {
                    let retry = backoff(delivery.attempts);
                    tracing::warn!(alert = delivery.id, attempts = delivery.attempts, error = %error, retry_in = ?retry, "alert not delivered; will retry");
                    sqlx::query("SELECT private.alert_delivery_failed($1, $2, $3)")
                        .bind(delivery.id)
                        .bind(&error)
                        .bind(i32::try_from(retry.as_millis()).unwrap_or(i32::MAX))
                        .execute(self.db.platform_level())
                        .await?;
                }
            }
        }
        Ok(due.len())
    }

    async fn send(&self, delivery: &Delivery) -> Result<(), String> {
        let Some(url) = &self.settings.webhook_url else {
            return Ok(());
        };
        let body = serde_json::to_vec(&delivery.payload()).expect("serialisable payload");
        let mut request = self.http.post(url.clone()).header("content-type", "application/json");
        if let Some(secret) = &self.settings.webhook_secret {
            request = request
                .header("Venueql-Signature", signature_header(secret.expose_secret(), Utc::now().timestamp(), &body));
        }
        // The URL may itself be a secret (a Slack webhook): never in errors or logs.
        let response =
            request.body(body).send().await.map_err(|e| format!("alert receiver unreachable: {}", e.without_url()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(format!("alert receiver answered {}", response.status()))
        }
    }
}

/// Logs a new delivery and sends it to Sentry as a message tagged with its kind and
/// venue id (the summary carries ids only).
fn report(delivery: &Delivery) {
    let venue = delivery.venue_id.map_or_else(|| "platform".to_string(), |v| v.to_string());
    tracing::error!(alert = true, kind = %delivery.kind, venue = %venue, count = delivery.events, digest = delivery.digest, "critical alert");
    sentry::with_scope(
        |scope| {
            scope.set_tag("alert.kind", &delivery.kind);
            if let Some(venue) = delivery.venue_id {
                scope.set_tag("venue", venue);
            }
        },
        || sentry::capture_message(&delivery.text(), sentry::Level::Error),
    );
}

/// Runs the worker until the process ends: a round every half second (at once again when
/// a round had work). A database outage is logged and waited out.
pub fn spawn_worker(worker: AlertWorker) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match worker.run_once().await {
                Ok(attempted) if attempted > 0 => continue,
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(error = %error.client_message(), "alert outbox unavailable; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_stripe_style_hmac_of_time_and_body() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently (python hmac).
        assert_eq!(
            signature_header("secret", 1_700_000_000, b"{}"),
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
    }

    #[test]
    fn a_burst_is_reported_once_per_window() {
        let burst = Burst::new(3, Duration::from_secs(60));
        let reports: Vec<Option<u32>> = (0..10).map(|_| burst.hit()).collect();
        assert_eq!(reports.iter().flatten().collect::<Vec<_>>(), vec![&3]);
        assert_eq!(reports[2], Some(3));
    }

    #[test]
    fn backoff_doubles_from_one_second_up_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(40), Duration::from_secs(256).min(Duration::from_secs(300)));
    }
}
