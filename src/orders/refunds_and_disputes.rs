//! The money side of an order: its refunds and disputes, and the refund and dispute state
//! kept on the order row. The whole life of a refund is here: asked for by staff
//! ([`request_refund`], through a [`RefundGateway`] the payment provider implements),
//! asked again when the provider did not answer ([`retry_requested_refunds`]), and
//! settled by what the provider reports ([`refund_reported`], [`charge_refunded`]).
//! Disputes arrive only from the provider ([`dispute_reported`]).
//!
//! Order independence: every state the provider reports carries its event's time and id
//! ([`Stamp`]); an older report never overwrites a newer one, and refunded amounts only
//! grow. So the final state is the same whatever order, and however often, reports come.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::find;
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// When a reported state was produced, and how to break ties of the same second.
#[derive(Clone, Debug)]
pub struct Stamp {
    /// When the provider produced the state (its event's `created`).
    pub at: DateTime<Utc>,
    /// The provider's event id.
    pub event: String,
}

impl Stamp {
    /// The tie-break stored as `state_event`: `"<rank>:<event id>"`. Within one second a
    /// more final state (higher rank, one digit) wins, then the higher event id; so the
    /// winner never depends on the arrival order.
    pub fn key(&self, rank: u8) -> String {
        format!("{}:{}", rank.min(9), self.event)
    }
}

/// Where a refund stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefundStatus {
    /// Recorded here; the provider has not answered yet.
    Requested,
    /// Accepted by the provider, not settled.
    Pending,
    /// The customer must act.
    RequiresAction,
    /// Done.
    Succeeded,
    /// Failed (frees its amount).
    Failed,
    /// Cancelled (frees its amount).
    Canceled,
}

impl RefundStatus {
    const NAMES: [(RefundStatus, &'static str); 6] = [
        (RefundStatus::Requested, "requested"),
        (RefundStatus::Pending, "pending"),
        (RefundStatus::RequiresAction, "requires_action"),
        (RefundStatus::Succeeded, "succeeded"),
        (RefundStatus::Failed, "failed"),
        (RefundStatus::Canceled, "canceled"),
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(s, _)| *s == self).map(|(_, n)| *n).unwrap_or("requested")
    }

    fn from_stored(name: &str) -> RefundStatus {
        Self::NAMES.iter().find(|(_, n)| *n == name).map(|(s, _)| *s).unwrap_or(RefundStatus::Requested)
    }

    /// The tie-break rank: how final the status is.
    fn finality(self) -> u8 {
        match self {
            RefundStatus::Requested | RefundStatus::Pending => 0,
            RefundStatus::RequiresAction => 1,
            RefundStatus::Succeeded | RefundStatus::Failed | RefundStatus::Canceled => 2,
        }
    }
}

/// Where a dispute stands: the provider's statuses, by their names (`needs_response`, …),
/// which is also how the payment provider's events spell them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisputeStatus {
    /// Opened: evidence is due.
    #[default]
    NeedsResponse,
    /// Evidence submitted.
    UnderReview,
    /// Decided for the venue.
    Won,
    /// Decided for the cardholder.
    Lost,
    /// An inquiry needing a response.
    WarningNeedsResponse,
    /// An inquiry under review.
    WarningUnderReview,
    /// An inquiry closed without a dispute.
    WarningClosed,
}

impl DisputeStatus {
    /// The stored name (shown as `Order.disputeStatus`).
    pub fn as_str(self) -> &'static str {
        match self {
            DisputeStatus::NeedsResponse => "needs_response",
            DisputeStatus::UnderReview => "under_review",
            DisputeStatus::Won => "won",
            DisputeStatus::Lost => "lost",
            DisputeStatus::WarningNeedsResponse => "warning_needs_response",
            DisputeStatus::WarningUnderReview => "warning_under_review",
            DisputeStatus::WarningClosed => "warning_closed",
        }
    }

    fn finality(self) -> u8 {
        match self {
            DisputeStatus::NeedsResponse | DisputeStatus::WarningNeedsResponse => 0,
            DisputeStatus::UnderReview | DisputeStatus::WarningUnderReview => 1,
            DisputeStatus::Won | DisputeStatus::Lost | DisputeStatus::WarningClosed => 2,
        }
    }
}

// ───────────────────────────── the order row ─────────────────────────────

/// Recomputes the refund and dispute state of the checkout's order from its refunds and
/// disputes; marks it refunded once confirmed refunds cover it, and gives it back its
/// kitchen status if such a refund fails after all (both audited). Runs after every
/// change to those, in the same transaction.
pub(super) async fn sync_money(tx: &mut VenueTx, who: &Who, checkout_id: Uuid) -> Result<(), AppError> {
    // Lock first, in its own statement: the recompute below then reads a snapshot taken
    // after any concurrent writer of this order committed.
    sqlx::query("SELECT 1 FROM orders WHERE checkout_id = $1 FOR UPDATE").bind(checkout_id).execute(tx.conn()).await?;
    let changed: Option<(Uuid, String, String)> = sqlx::query_as(
        "WITH r AS (SELECT coalesce(sum(amount_minor) FILTER (WHERE status = 'succeeded'), 0)::bigint AS confirmed, \
                           coalesce(sum(amount_minor) FILTER (WHERE status IN ('requested', 'pending', 'requires_action')), 0)::bigint AS in_flight \
                    FROM refunds WHERE checkout_id = $1), \
              m AS (SELECT r.confirmed AS refunded, r.confirmed, r.in_flight FROM r), \
              d AS (SELECT status FROM disputes WHERE checkout_id = $1 ORDER BY created_at DESC, stripe_dispute_id LIMIT 1), \
              next AS (SELECT o.id, m.refunded, greatest(0, m.confirmed + m.in_flight - m.refunded) AS pending, \
                              (SELECT status FROM d) AS dispute, \
                              CASE WHEN m.refunded >= o.amount_minor THEN 'refunded' \
                                   WHEN o.status = 'refunded' THEN coalesce(o.status_before_refund, 'placed') \
                                   ELSE o.status END AS status, \
                              o.status AS before \
                       FROM orders o, m WHERE o.checkout_id = $1) \
         UPDATE orders o SET refunded_minor = n.refunded, refund_pending_minor = n.pending, dispute_status = n.dispute, \
                status = n.status, updated_at = now(), \
                status_before_refund = CASE WHEN n.status = 'refunded' AND o.status <> 'refunded' THEN o.status \
                                            ELSE o.status_before_refund END \
         FROM next n \
         WHERE o.id = n.id AND (o.refunded_minor, o.refund_pending_minor, o.dispute_status, o.status) \
               IS DISTINCT FROM (n.refunded, n.pending, n.dispute, n.status) \
         RETURNING o.id, n.before, n.status",
    )
    .bind(checkout_id)
    .fetch_optional(tx.conn())
    .await?;
    if let Some((order_id, before, after)) = changed
        && before != after
    {
        let action = if after == "refunded" { "order.refunded" } else { "order.refund_reversed" };
        let change = Change {
            action,
            target_type: "order",
            target_id: order_id.to_string(),
            before: Some(json!({ "status": before })),
            after: Some(json!({ "status": after })),
        };
        audit::record(tx, who, change).await?;
    }
    Ok(())
}

// ───────────────────────────── refunds asked for here ─────────────────────────────

/// A refund to ask the payment provider for.
#[derive(Clone, Debug)]
pub struct RefundRequest {
    /// The venue whose payment is refunded.
    pub venue: VenueId,
    /// Our refund row: the provider's idempotency key and the refund's metadata name it,
    /// so asking twice cannot refund twice.
    pub refund_id: Uuid,
    /// The payment to refund (the provider's id).
    pub payment_intent_id: String,
    /// How much, minor units.
    pub amount_minor: i64,
}

/// What the payment provider answered.
#[derive(Clone, Debug)]
pub enum RefundAnswer {
    /// Accepted: pending until the provider reports it settled.
    Accepted {
        /// The provider's refund id.
        provider_refund_id: Option<String>,
    },
    /// A definite no: the refund failed, and frees its amount.
    Refused(String),
    /// No answer (or one that may have refunded): the refund stays requested, counted
    /// against what is left, until the provider reports it or a retry settles it.
    Unknown(String),
}

/// The payment provider's refunds, as orders need them. `payments` implements it with
/// Stripe; orders never names the provider.
pub trait RefundGateway: Send + Sync {
    /// Whether refunds can be asked for at all (the provider is configured).
    fn available(&self) -> Result<(), AppError>;

    /// Asks for the refund; the same request (same `refund_id`) may be sent again safely.
    fn request<'a>(&'a self, request: &'a RefundRequest) -> Pin<Box<dyn Future<Output = RefundAnswer> + Send + 'a>>;
}

/// Refunds of at least this share of an order (in percent) raise a critical audit event.
pub const LARGE_REFUND_PERCENT: i64 = 100;

/// A refund staff ask for.
#[derive(Clone, Copy, Debug)]
pub struct RefundAsk<'a> {
    /// The order.
    pub order_id: Uuid,
    /// How much, minor units.
    pub amount_minor: i64,
    /// Why (at most 500 characters).
    pub reason: Option<&'a str>,
}

/// `refundOrder`: records the refund as requested, asks the provider, and leaves it
/// pending until the provider reports it. Refuses more than what is left to refund,
/// counting refunds in flight. Both transactions go through [`super::live::commit`].
pub async fn request_refund(
    db: &Db,
    gateway: &dyn RefundGateway,
    hub: Option<&super::live::OrdersHub>,
    who: &Who,
    venue: VenueId,
    ask: RefundAsk<'_>,
) -> Result<(), AppError> {
    let RefundAsk { order_id, amount_minor, reason } = ask;
    if amount_minor <= 0 {
        return Err(AppError::bad_input("amountMinor must be a positive number of minor units"));
    }
    if reason.is_some_and(|r| r.chars().count() > 500) {
        return Err(AppError::bad_input("reason must be at most 500 characters"));
    }
    gateway.available()?;
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE").bind(order_id).fetch_optional(tx.conn()).await?;
    let order = find(&mut tx, order_id).await?.ok_or(AppError::NotFound("order"))?;
    let left = order.amount_minor - order.refunded_minor - order.refund_pending_minor;
    if amount_minor > left {
        let message = format!(
            "amountMinor {amount_minor} is more than what is left to refund on this order ({left} of {} {}, counting refunds in progress)",
            order.amount_minor, order.currency
        );
        return Err(AppError::bad_input(message));
    }
    let refund_id: Uuid = sqlx::query_scalar(
        "INSERT INTO refunds (venue_id, checkout_id, amount_minor, currency, status, reason, requested_by) \
         VALUES ($1, $2, $3, $4, 'requested', $5, $6) RETURNING id",
    )
    .bind(venue.as_uuid())
    .bind(order.checkout_id)
    .bind(amount_minor)
    .bind(&order.currency)
    .bind(reason)
    .bind(&who.actor)
    .fetch_one(tx.conn())
    .await?;
    let change = Change {
        action: "refund.requested",
        target_type: "order",
        target_id: order_id.to_string(),
        before: Some(
            json!({ "refunded_minor": order.refunded_minor, "refund_pending_minor": order.refund_pending_minor }),
        ),
        after: Some(json!({ "refund": refund_id, "amount_minor": amount_minor, "reason": reason })),
    };
    if amount_minor * 100 >= order.amount_minor * LARGE_REFUND_PERCENT {
        audit::record_critical(&mut tx, who, AlertKind::LargeRefund, change).await?;
    } else {
        audit::record(&mut tx, who, change).await?;
    }
    sync_money(&mut tx, who, order.checkout_id).await?;
    super::live::commit(tx, hub).await?;

    let request = RefundRequest { venue, refund_id, payment_intent_id: order.payment_intent_id.clone(), amount_minor };
    let answer = gateway.request(&request).await;
    let mut tx = db.venue_tx(venue).await?;
    match &answer {
        RefundAnswer::Accepted { provider_refund_id } => {
            mark_accepted(&mut tx, refund_id, provider_refund_id.as_deref()).await?
        }
        RefundAnswer::Refused(_) => {
            sqlx::query(
                "UPDATE refunds SET status = 'failed', updated_at = now() WHERE id = $1 AND status = 'requested'",
            )
            .bind(refund_id)
            .execute(tx.conn())
            .await?;
        }
        RefundAnswer::Unknown(_) => {}
    }
    sync_money(&mut tx, who, order.checkout_id).await?;
    super::live::commit(tx, hub).await?;
    match answer {
        RefundAnswer::Accepted { .. } => Ok(()),
        RefundAnswer::Refused(why) => {
            Err(AppError::bad_input(format!("the payment provider refused the refund: {why}")))
        }
        RefundAnswer::Unknown(why) => {
            tracing::warn!(error = %why, refund = %refund_id, "refund outcome unknown; left requested");
            Err(AppError::Unavailable(
                "Stripe did not confirm the refund; it stays pending and is retried with the same idempotency key, so it cannot be made twice".into(),
            ))
        }
    }
}

/// The provider accepted the refund: it is pending until the provider reports it.
async fn mark_accepted(tx: &mut VenueTx, refund_id: Uuid, provider_refund_id: Option<&str>) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE refunds SET stripe_refund_id = coalesce(stripe_refund_id, $2), \
                status = CASE WHEN status = 'requested' THEN 'pending' ELSE status END, updated_at = now() \
         WHERE id = $1",
    )
    .bind(refund_id)
    .bind(provider_refund_id)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Asks the provider again (same refund id, so at most once) for the venue's refunds left
/// `requested` for over a minute; returns how many it has now accepted.
pub async fn retry_requested_refunds(db: &Db, gateway: &dyn RefundGateway, venue: VenueId) -> Result<usize, AppError> {
    gateway.available()?;
    let mut tx = db.venue_tx(venue).await?;
    let stuck: Vec<(Uuid, i64, String)> = sqlx::query_as(
        "SELECT r.id, r.amount_minor, p.payment_intent_id FROM refunds r \
         JOIN orders o ON o.checkout_id = r.checkout_id JOIN payments p ON p.order_id = o.id \
         WHERE r.status = 'requested' AND r.created_at < now() - interval '1 minute' ORDER BY r.created_at LIMIT 50",
    )
    .fetch_all(tx.conn())
    .await?;
    tx.commit().await?;
    let mut accepted = 0;
    for (refund_id, amount_minor, payment_intent_id) in stuck {
        let request = RefundRequest { venue, refund_id, payment_intent_id, amount_minor };
        if let RefundAnswer::Accepted { provider_refund_id } = gateway.request(&request).await {
            let mut tx = db.venue_tx(venue).await?;
            mark_accepted(&mut tx, refund_id, provider_refund_id.as_deref()).await?;
            tx.commit().await?;
            accepted += 1;
        }
    }
    Ok(accepted)
}

// ───────────────────────────── what the provider reports ─────────────────────────────

/// A refund as the payment provider reports it.
#[derive(Clone, Debug)]
pub struct ReportedRefund<'a> {
    /// The provider's refund id.
    pub provider_id: &'a str,
    /// Our refund row, when the refund was asked for here (its metadata names it).
    pub ours: Option<Uuid>,
    /// Where it stands.
    pub status: RefundStatus,
    /// Minor units.
    pub amount_minor: i64,
    /// ISO 4217 (stored upper case).
    pub currency: &'a str,
    /// The provider's reason code.
    pub reason: Option<&'a str>,
}

/// One refund's state changed at the provider.
pub async fn refund_reported(
    tx: &mut VenueTx,
    who: &Who,
    checkout_id: Uuid,
    refund: &ReportedRefund<'_>,
    stamp: &Stamp,
) -> Result<String, AppError> {
    let outcome = refund.upsert(tx, who, checkout_id, stamp).await?;
    sync_money(tx, who, checkout_id).await?;
    Ok(outcome)
}

/// The charge of the checkout was refunded `total_refunded` in all (only grows), with the
/// refunds it carries. Refunds still in flight here that the total covers (oldest first)
/// are confirmed by it; a newer report of a refund that failed after all still wins.
pub async fn charge_refunded(
    tx: &mut VenueTx,
    who: &Who,
    checkout_id: Uuid,
    total_refunded: i64,
    refunds: &[ReportedRefund<'_>],
    stamp: &Stamp,
) -> Result<String, AppError> {
    for refund in refunds {
        refund.upsert(tx, who, checkout_id, stamp).await?;
    }
    sqlx::query(
        "WITH confirmed AS (SELECT coalesce(sum(amount_minor), 0) AS total FROM refunds WHERE checkout_id = $1 AND status = 'succeeded'), \
              in_flight AS (SELECT id, sum(amount_minor) OVER (ORDER BY created_at, id) AS running FROM refunds \
                            WHERE checkout_id = $1 AND status IN ('requested', 'pending', 'requires_action')) \
         UPDATE refunds r SET status = 'succeeded', state_at = $3, state_event = $4, updated_at = now() \
         FROM in_flight f, confirmed c \
         WHERE r.id = f.id AND c.total + f.running <= $2 AND (r.state_at, r.state_event) < ($3, $4)",
    )
    .bind(checkout_id)
    .bind(total_refunded)
    .bind(stamp.at)
    .bind(stamp.key(2))
    .execute(tx.conn())
    .await?;
    sync_money(tx, who, checkout_id).await?;
    Ok(format!("charge refunded {total_refunded} in total"))
}

impl ReportedRefund<'_> {
    /// Writes this refund's state at `checkout_id`, unless a newer one is stored.
    async fn upsert(&self, tx: &mut VenueTx, who: &Who, checkout_id: Uuid, stamp: &Stamp) -> Result<String, AppError> {
        let refund = self;
        let (provider_id, status) = (refund.provider_id, refund.status.as_str());
        if refund.amount_minor <= 0 || refund.status == RefundStatus::Requested {
            return Ok(format!("ignored: refund state {status:?} or amount {} not understood", refund.amount_minor));
        }
        let rank = refund.status.finality();
        let updated: Option<Uuid> = match refund.ours {
            Some(ours) => {
                sqlx::query_scalar(
                    "UPDATE refunds SET stripe_refund_id = $2, status = $3, state_at = $4, state_event = $5, updated_at = now() \
                     WHERE id = $1 AND checkout_id = $6 AND (state_at, state_event) < ($4, $5) RETURNING id",
                )
                .bind(ours)
                .bind(provider_id)
                .bind(status)
                .bind(stamp.at)
                .bind(stamp.key(rank))
                .bind(checkout_id)
                .fetch_optional(tx.conn())
                .await?
            }
            None => {
                sqlx::query_scalar(
                    "INSERT INTO refunds (venue_id, checkout_id, stripe_refund_id, amount_minor, currency, status, reason, \
                                          requested_by, state_at, state_event) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, 'stripe', $8, $9) \
                     ON CONFLICT (venue_id, stripe_refund_id) DO UPDATE \
                       SET status = EXCLUDED.status, state_at = EXCLUDED.state_at, state_event = EXCLUDED.state_event, updated_at = now() \
                       WHERE (refunds.state_at, refunds.state_event) < (EXCLUDED.state_at, EXCLUDED.state_event) \
                     RETURNING id",
                )
                .bind(tx.venue().as_uuid())
                .bind(checkout_id)
                .bind(provider_id)
                .bind(refund.amount_minor)
                .bind(refund.currency.to_ascii_uppercase())
                .bind(status)
                .bind(refund.reason)
                .bind(stamp.at)
                .bind(stamp.key(rank))
                .fetch_optional(tx.conn())
                .await?
            }
        };
        let Some(refund_id) = updated else {
            return Ok(format!("refund {provider_id}: no change (a newer state is recorded)"));
        };
        let change = Change {
            action: "refund.updated",
            target_type: "refund",
            target_id: refund_id.to_string(),
            before: None,
            after: Some(json!({ "stripe_refund": provider_id, "status": status, "amount_minor": refund.amount_minor })),
        };
        audit::record(tx, who, change).await?;
        Ok(format!("refund {provider_id} {status}"))
    }
}

/// A dispute as the payment provider reports it.
#[derive(Clone, Debug)]
pub struct ReportedDispute<'a> {
    /// The provider's dispute id.
    pub provider_id: &'a str,
    /// Where it stands.
    pub status: DisputeStatus,
    /// Disputed amount, minor units.
    pub amount_minor: i64,
    /// ISO 4217 (stored upper case).
    pub currency: &'a str,
    /// The cardholder's reason.
    pub reason: &'a str,
}

/// What a dispute report is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisputeReport {
    /// The dispute was opened (a critical audit event).
    Opened,
    /// Its state changed.
    Updated,
    /// It was decided (a critical audit event).
    Closed,
}

/// A dispute of the checkout's payment changed at the provider.
pub async fn dispute_reported(
    tx: &mut VenueTx,
    who: &Who,
    checkout_id: Uuid,
    dispute: &ReportedDispute<'_>,
    report: DisputeReport,
    stamp: &Stamp,
) -> Result<String, AppError> {
    let id = dispute.provider_id;
    let changed: Option<String> = sqlx::query_scalar(
        "INSERT INTO disputes (venue_id, stripe_dispute_id, checkout_id, amount_minor, currency, reason, status, state_at, state_event) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (venue_id, stripe_dispute_id) DO UPDATE \
           SET status = EXCLUDED.status, amount_minor = EXCLUDED.amount_minor, reason = EXCLUDED.reason, \
               state_at = EXCLUDED.state_at, state_event = EXCLUDED.state_event, updated_at = now() \
           WHERE (disputes.state_at, disputes.state_event) < (EXCLUDED.state_at, EXCLUDED.state_event) \
         RETURNING status",
    )
    .bind(tx.venue().as_uuid())
    .bind(id)
    .bind(checkout_id)
    .bind(dispute.amount_minor)
    .bind(dispute.currency.to_ascii_uppercase())
    .bind(dispute.reason)
    .bind(dispute.status.as_str())
    .bind(stamp.at)
    .bind(stamp.key(dispute.status.finality()))
    .fetch_optional(tx.conn())
    .await?;
    sync_money(tx, who, checkout_id).await?;
    let action = match report {
        DisputeReport::Opened => Some("dispute.created"),
        DisputeReport::Closed => Some("dispute.closed"),
        DisputeReport::Updated => None,
    };
    if let Some(action) = action {
        let change = Change {
            action,
            target_type: "dispute",
            target_id: id.to_string(),
            before: None,
            after: Some(json!({ "status": dispute.status.as_str(), "reason": dispute.reason,
                "amount_minor": dispute.amount_minor, "checkout": checkout_id })),
        };
        audit::record_critical(tx, who, AlertKind::Dispute, change).await?;
    }
    Ok(match changed {
        Some(status) => format!("dispute {id} {status}"),
        None => format!("dispute {id}: no change (a newer state is recorded)"),
    })
}

// ───────────────────────────── reading refunds ─────────────────────────────

/// A refund of an order.
#[derive(Clone, Debug)]
pub struct Refund {
    /// Refund id.
    pub id: Uuid,
    /// The provider's refund id, once known.
    pub provider_refund_id: Option<String>,
    /// Minor units.
    pub amount_minor: i64,
    /// Where it stands.
    pub status: RefundStatus,
    /// Why.
    pub reason: Option<String>,
    /// Who asked (actor), or `stripe` for refunds made at the provider.
    pub requested_by: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    checkout_id: Uuid,
    id: Uuid,
    stripe_refund_id: Option<String>,
    amount_minor: i64,
    status: String,
    reason: Option<String>,
    requested_by: Option<String>,
    created_at: DateTime<Utc>,
}

/// The refunds of the orders of these checkouts, by checkout, newest first, in one
/// statement.
pub async fn refunds_of(tx: &mut VenueTx, checkouts: &[Uuid]) -> Result<HashMap<Uuid, Vec<Refund>>, AppError> {
    let rows: Vec<RefundRow> = sqlx::query_as(
        "SELECT checkout_id, id, stripe_refund_id, amount_minor, status, reason, requested_by, created_at FROM refunds \
         WHERE venue_id = $1 AND checkout_id = ANY($2) ORDER BY created_at DESC",
    )
    .bind(tx.venue().as_uuid())
    .bind(checkouts)
    .fetch_all(tx.conn())
    .await?;
    let mut by_checkout: HashMap<Uuid, Vec<Refund>> = HashMap::new();
    for row in rows {
        by_checkout.entry(row.checkout_id).or_default().push(Refund {
            id: row.id,
            provider_refund_id: row.stripe_refund_id,
            amount_minor: row.amount_minor,
            status: RefundStatus::from_stored(&row.status),
            reason: row.reason,
            requested_by: row.requested_by,
            created_at: row.created_at,
        });
    }
    Ok(by_checkout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_names_round_trip_and_more_final_states_rank_higher() {
        for (status, name) in RefundStatus::NAMES {
            assert_eq!(RefundStatus::from_stored(name), status);
            assert_eq!(status.as_str(), name);
        }
        assert!(RefundStatus::Succeeded.finality() > RefundStatus::RequiresAction.finality());
        assert!(DisputeStatus::Lost.finality() > DisputeStatus::UnderReview.finality());
        let stamp = Stamp { at: Utc::now(), event: "evt_1".into() };
        assert_eq!(stamp.key(12), "9:evt_1");
    }
}
