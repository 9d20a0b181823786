//! The audit writer: every privileged mutation calls [`record`] inside its own venue
//! transaction, so the audit row commits or rolls back with the change it describes.
//! The database assigns the row's place in the venue's hash chain (migration 0001).

use std::net::IpAddr;

use serde_json::Value;

use crate::error::AppError;
use crate::tenancy::VenueTx;

/// Who caused an audited change, and through which request.
#[derive(Clone, Debug)]
pub struct Who {
    /// `api_token:<id>`, `operator:<name>`, …
    pub actor: String,
    /// The HTTP request id, when the change came through HTTP.
    pub request_id: Option<String>,
    /// The client address, when known.
    pub ip: Option<IpAddr>,
}

impl Who {
    /// An operator acting from the command line.
    pub fn operator(actor: &str) -> Who {
        Who::outside_http(actor.to_string())
    }

    /// An actor outside any GraphQL request context (e.g. an OAuth client at the token
    /// endpoint).
    pub fn outside_http(actor: String) -> Who {
        Who { actor, request_id: None, ip: None }
    }
}

/// One audited change: what was done to which object, with its state before and after.
pub struct Change<'a> {
    /// Dotted verb, e.g. `menu_item.updated`.
    pub action: &'a str,
    /// Kind of object changed, e.g. `menu_item`.
    pub target_type: &'a str,
    /// Id of the object changed.
    pub target_id: String,
    /// State before (None for creations).
    pub before: Option<Value>,
    /// State after (None for deletions).
    pub after: Option<Value>,
}

/// Appends an audit row for `change` at the transaction's venue.
pub async fn record(tx: &mut VenueTx, who: &Who, change: Change<'_>) -> Result<(), AppError> {
    let venue = tx.venue().as_uuid();
    sqlx::query(
        "INSERT INTO audit_events (venue_id, seq, actor, action, target_type, target_id, before, after, request_id, ip, prev_hash, row_hash) \
         VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9::inet, '', '')",
    )
    .bind(venue)
    .bind(&who.actor)
    .bind(change.action)
    .bind(change.target_type)
    .bind(&change.target_id)
    .bind(change.before)
    .bind(change.after)
    .bind(who.request_id.as_deref())
    .bind(who.ip.map(|ip| ip.to_string()))
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// Appends a critical audit row (`"severity": "critical"` in its hashed `after`) and raises
/// an alert in the logs (`alert = true`, error level), for events a person must look at:
/// payment mismatches, disputes, paid checkouts without an order.
pub async fn record_critical(tx: &mut VenueTx, who: &Who, mut change: Change<'_>) -> Result<(), AppError> {
    let mut after = change.after.take().unwrap_or_else(|| serde_json::json!({}));
    after["severity"] = serde_json::json!("critical");
    tracing::error!(alert = true, venue = %tx.venue(), action = change.action, target = %change.target_id, "critical audit event");
    change.after = Some(after);
    record(tx, who, change).await
}

/// The result of checking one venue's audit chain.
#[derive(Debug, serde::Serialize)]
pub struct ChainReport {
    /// Venue slug.
    pub venue: String,
    /// Rows checked.
    pub events: i64,
    /// Every problem found (empty when the chain is intact).
    pub problems: Vec<String>,
}

/// `venueql audit verify`: recomputes every venue's hash chain through the cross-tenant
/// door, one venue scope at a time. Detects edited rows (hash mismatch), removed or
/// reordered rows (sequence gaps, broken links), even when made by a superuser.
pub async fn verify_all(door: &crate::tenancy::CrossTenantDoor, actor: &str) -> Result<Vec<ChainReport>, AppError> {
    let mut tx = door.open_cross_tenant(actor, "audit verify").await?;
    let venues: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, slug FROM venues ORDER BY slug").fetch_all(tx.conn()).await?;
    tx.commit().await?;
    let mut reports = Vec::new();
    for (id, slug) in venues {
        let tx = door.open_cross_tenant(actor, "audit verify").await?;
        let mut tx = tx.into_venue(crate::tenancy::VenueId::from_door(id)).await?;
        let rows: Vec<(i64, bool, bool)> = sqlx::query_as(
            "SELECT seq, \
                    prev_hash = COALESCE(lag(row_hash) OVER (ORDER BY seq), '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea), \
                    row_hash = sha256(prev_hash || convert_to(public.audit_canonical(a), 'UTF8')) \
             FROM audit_events a ORDER BY seq",
        )
        .fetch_all(tx.conn())
        .await?;
        tx.commit().await?;
        let mut problems = Vec::new();
        for (index, (seq, linked, intact)) in rows.iter().enumerate() {
            if *seq != index as i64 + 1 {
                problems.push(format!("event {seq}: expected sequence number {} (a row is missing)", index + 1));
            }
            if !linked {
                problems.push(format!("event {seq}: prev_hash does not match the previous row"));
            }
            if !intact {
                problems.push(format!("event {seq}: content does not match its hash (edited)"));
            }
        }
        reports.push(ChainReport { venue: slug, events: rows.len() as i64, problems });
    }
    Ok(reports)
}
