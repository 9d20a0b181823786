//! The audit writer: every privileged mutation calls [`record`] inside its own venue
//! transaction, so the audit row commits or rolls back with the change it describes.
//! The database assigns the row's place in the venue's hash chain (migration 0001); the
//! row's chain hash is then sealed with `AUDIT_HMAC_KEY` ([`seal`]) in the same
//! transaction. Critical rows also enter the alert outbox ([`alerts`]); every row is
//! copied to write-once storage ([`worm`]).

pub mod alerts;
pub mod seal;
pub mod worm;

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

/// Appends an audit row for `change` at the transaction's venue, sealed with the
/// process's `AUDIT_HMAC_KEY` (refused when no key is installed: an unsealed row would
/// look like tampering to every later verification).
pub async fn record(tx: &mut VenueTx, who: &Who, change: Change<'_>) -> Result<(), AppError> {
    let key = seal::installed()?;
    let venue = tx.venue().as_uuid();
    let (seq, row_hash): (i64, Vec<u8>) = sqlx::query_as(
        "INSERT INTO audit_events (venue_id, seq, actor, action, target_type, target_id, before, after, request_id, ip, prev_hash, row_hash) \
         VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9::inet, '', '') RETURNING seq, row_hash",
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
    .fetch_one(tx.conn())
    .await?;
    insert_seal(tx, key, seq, &row_hash).await
}

/// Seals row `seq` of the transaction's venue.
async fn insert_seal(tx: &mut VenueTx, key: &seal::SealKey, seq: i64, row_hash: &[u8]) -> Result<(), AppError> {
    let venue = tx.venue().as_uuid();
    sqlx::query("INSERT INTO audit_seals (venue_id, seq, key_id, mac) VALUES ($1, $2, $3, $4)")
        .bind(venue)
        .bind(seq)
        .bind(key.id())
        .bind(key.mac(venue, seq, row_hash))
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Appends a critical audit row (`"severity": "critical"` and the alert kind in its hashed
/// `after`), logs it (`alert = true`, error level) and puts an alert in the outbox in the
/// same transaction, for events a person must look at (see [`alerts::AlertKind`]).
pub async fn record_critical(
    tx: &mut VenueTx,
    who: &Who,
    kind: alerts::AlertKind,
    mut change: Change<'_>,
) -> Result<(), AppError> {
    let mut after = change.after.take().unwrap_or_else(|| serde_json::json!({}));
    after["severity"] = serde_json::json!("critical");
    after["alert"] = serde_json::json!(kind.as_str());
    tracing::error!(alert = true, venue = %tx.venue(), kind = kind.as_str(), action = change.action, target = %change.target_id, "critical audit event");
    let summary = format!("{} {} {}", change.action, change.target_type, change.target_id);
    change.after = Some(after);
    record(tx, who, change).await?;
    alerts::raise_in(tx, kind, &summary).await
}

/// Whether the transaction's venue has a row of `action` by `actor` younger than
/// `within`: lets events that repeat (refusals) be written once per period. It takes the
/// venue's chain lock first (the one every audit insert takes, held to commit), so
/// concurrent callers that then record see each other's rows: exactly one is written.
pub async fn recorded_within(
    tx: &mut VenueTx,
    action: &str,
    actor: &str,
    within: std::time::Duration,
) -> Result<bool, AppError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('venueql.audit:' || $1::text, 0))")
        .bind(tx.venue().as_uuid())
        .execute(tx.conn())
        .await?;
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audit_events WHERE venue_id = $1 AND action = $2 \
         AND occurred_at > now() - make_interval(secs => $3) AND actor = $4)",
    )
    .bind(tx.venue().as_uuid())
    .bind(action)
    .bind(within.as_secs_f64())
    .bind(actor)
    .fetch_one(tx.conn())
    .await?)
}

/// Appends a critical row when `critical` names an alert kind, a plain one otherwise.
pub async fn record_as(
    tx: &mut VenueTx,
    who: &Who,
    critical: Option<alerts::AlertKind>,
    change: Change<'_>,
) -> Result<(), AppError> {
    match critical {
        Some(kind) => record_critical(tx, who, kind, change).await,
        None => record(tx, who, change).await,
    }
}

/// The result of checking one venue's audit chain.
#[derive(Debug, serde::Serialize)]
pub struct ChainReport {
    /// Venue slug.
    pub venue: String,
    /// Rows checked.
    pub events: i64,
    /// Rows found in the WORM copy (with `--against-worm`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worm_events: Option<i64>,
    /// Rows of the database the WORM copy does not hold yet (shipping lags a little).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_yet_in_worm: Option<i64>,
    /// Every problem found (empty when the chain is intact).
    pub problems: Vec<String>,
}

/// One database row as verification sees it.
#[derive(sqlx::FromRow)]
struct CheckedRow {
    seq: i64,
    linked: bool,
    intact: bool,
    row_hash: Vec<u8>,
    key_id: Option<String>,
    mac: Option<Vec<u8>>,
}

/// `venueql audit verify`: recomputes every venue's hash chain through the cross-tenant
/// door, one venue scope at a time, and checks every row's keyed seal. Detects edited rows
/// (hash mismatch), removed or reordered rows (sequence gaps, broken links), and a chain a
/// superuser recomputed forward (its seals cannot be remade without `AUDIT_HMAC_KEY`).
/// With `worm`, also compares each venue with its write-once copy, which catches what no
/// check inside the database can: a deleted tail, an inserted row.
pub async fn verify_all(
    door: &crate::tenancy::CrossTenantDoor,
    actor: &str,
    worm: Option<&worm::WormStore>,
) -> Result<Vec<ChainReport>, AppError> {
    let key = seal::installed()?;
    let mut tx = door.open_cross_tenant(actor, "audit verify").await?;
    let venues: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, slug FROM venues ORDER BY slug").fetch_all(tx.conn()).await?;
    tx.commit().await?;
    let mut reports = Vec::new();
    for (id, slug) in venues {
        let tx = door.open_cross_tenant(actor, "audit verify").await?;
        let mut tx = tx.into_venue(crate::tenancy::VenueId::from_door(id)).await?;
        let rows = checked_rows(&mut tx).await?;
        tx.commit().await?;
        let mut problems = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            problems.extend(chain_problems(index, row));
            problems.extend(seal_problem(key, id, row));
        }
        let mut report =
            ChainReport { venue: slug, events: rows.len() as i64, worm_events: None, not_yet_in_worm: None, problems };
        if let Some(store) = worm {
            compare_with_worm(store, id, &rows, &mut report).await?;
        }
        reports.push(report);
    }
    Ok(reports)
}

/// Every row of the transaction's venue with its place in the plain chain checked (in
/// PostgreSQL, which computed it) and its seal.
async fn checked_rows(tx: &mut VenueTx) -> Result<Vec<CheckedRow>, AppError> {
    Ok(sqlx::query_as(
        "SELECT a.seq, \
                a.prev_hash = COALESCE(lag(a.row_hash) OVER (ORDER BY a.seq), '\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea) AS linked, \
                a.row_hash = sha256(a.prev_hash || convert_to(public.audit_canonical(a), 'UTF8')) AS intact, \
                a.row_hash, s.key_id, s.mac \
         FROM audit_events a LEFT JOIN audit_seals s ON s.venue_id = a.venue_id AND s.seq = a.seq ORDER BY a.seq",
    )
    .fetch_all(tx.conn())
    .await?)
}

/// What is wrong with the plain chain at `row`, the `index`-th row (0-based).
fn chain_problems(index: usize, row: &CheckedRow) -> Vec<String> {
    let seq = row.seq;
    let mut problems = Vec::new();
    if seq != index as i64 + 1 {
        problems.push(format!("event {seq}: expected sequence number {} (a row is missing)", index + 1));
    }
    if !row.linked {
        problems.push(format!("event {seq}: prev_hash does not match the previous row"));
    }
    if !row.intact {
        problems.push(format!("event {seq}: content does not match its hash (edited)"));
    }
    problems
}

fn seal_problem(key: &seal::SealKey, venue: uuid::Uuid, row: &CheckedRow) -> Option<String> {
    let seq = row.seq;
    match (&row.key_id, &row.mac) {
        (Some(id), Some(mac)) if id == key.id() => (!key.verifies(venue, seq, &row.row_hash, mac))
            .then(|| format!("event {seq}: its keyed seal does not match (rewritten without AUDIT_HMAC_KEY)")),
        (Some(id), Some(_)) => Some(format!("event {seq}: sealed with key {id}, not with the AUDIT_HMAC_KEY given")),
        _ => Some(format!("event {seq}: has no keyed seal")),
    }
}

async fn compare_with_worm(
    store: &worm::WormStore,
    venue: uuid::Uuid,
    rows: &[CheckedRow],
    report: &mut ChainReport,
) -> Result<(), AppError> {
    let (shipped, problems) = worm::shipped_rows(store, venue).await?;
    report.problems.extend(problems);
    let in_database: std::collections::HashMap<i64, String> =
        rows.iter().map(|r| (r.seq, r.row_hash.iter().map(|b| format!("{b:02x}")).collect())).collect();
    for row in &shipped {
        match in_database.get(&row.seq) {
            None => {
                report.problems.push(format!("event {}: in the WORM copy but not in the database (deleted)", row.seq))
            }
            Some(hash) if *hash != row.row_hash => report.problems.push(format!(
                "event {}: differs from its WORM copy (edited, inserted or the chain recomputed)",
                row.seq
            )),
            Some(_) => {}
        }
    }
    let shipped_through = shipped.iter().map(|r| r.seq).max().unwrap_or(0);
    report.worm_events = Some(shipped.len() as i64);
    report.not_yet_in_worm = Some(rows.iter().filter(|r| r.seq > shipped_through).count() as i64);
    Ok(())
}

/// Which audit rows a reader wants (the venue's own log, newest first).
#[derive(Default, Debug)]
pub struct LogFilter {
    /// Only these actions (empty: all).
    pub actions: Vec<String>,
    /// Only actors of these kinds: the part of `actor` before the colon, e.g. `staff`,
    /// `api_token`, `oauth_client`, `operator`, `venueql`, `stripe_event` (empty: all).
    pub actor_kinds: Vec<String>,
    /// At or after.
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// Before.
    pub to: Option<chrono::DateTime<chrono::Utc>>,
}

/// One row of a venue's audit log, as its readers see it.
#[derive(sqlx::FromRow, Debug, Clone)]
pub struct LogEntry {
    /// Place in the venue's chain (the cursor).
    pub seq: i64,
    /// The row's id.
    pub id: uuid::Uuid,
    /// When.
    pub occurred_at: chrono::DateTime<chrono::Utc>,
    /// Who (`staff:<id>`, `api_token:<id>`, …).
    pub actor: String,
    /// The part of `actor` before the colon.
    pub actor_kind: String,
    /// What.
    pub action: String,
    /// Kind of object changed.
    pub target_type: Option<String>,
    /// Object changed.
    pub target_id: Option<String>,
    /// State before.
    pub before: Option<Value>,
    /// State after.
    pub after: Option<Value>,
    /// The HTTP request.
    pub request_id: Option<String>,
    /// The client address.
    pub ip: Option<String>,
}

/// A page of the transaction's venue's audit log, newest first, before `before_seq`;
/// and whether older rows follow.
pub async fn log_page(
    tx: &mut VenueTx,
    first: i64,
    before_seq: Option<i64>,
    filter: &LogFilter,
) -> Result<(Vec<LogEntry>, bool), AppError> {
    let mut rows: Vec<LogEntry> = sqlx::query_as(
        "SELECT seq, id, occurred_at, actor, split_part(actor, ':', 1) AS actor_kind, action, target_type, target_id, \
                before, after, request_id, host(ip) AS ip \
         FROM audit_events \
         WHERE ($1::bigint IS NULL OR seq < $1) \
           AND (cardinality($2::text[]) = 0 OR action = ANY($2)) \
           AND (cardinality($3::text[]) = 0 OR split_part(actor, ':', 1) = ANY($3)) \
           AND ($4::timestamptz IS NULL OR occurred_at >= $4) \
           AND ($5::timestamptz IS NULL OR occurred_at < $5) \
         ORDER BY seq DESC LIMIT $6",
    )
    .bind(before_seq)
    .bind(&filter.actions)
    .bind(&filter.actor_kinds)
    .bind(filter.from)
    .bind(filter.to)
    .bind(first + 1)
    .fetch_all(tx.conn())
    .await?;
    let more = rows.len() as i64 > first;
    rows.truncate(first as usize);
    Ok((rows, more))
}

/// What `venueql audit seal-existing` did at one venue.
#[derive(Debug, serde::Serialize)]
pub struct SealReport {
    /// Venue slug.
    pub venue: String,
    /// Rows sealed now (rows written before keyed seals existed).
    pub sealed: i64,
}

/// An unsealed row that comes after a sealed one: once a venue's rows are sealed, every
/// later row is sealed in its own transaction, so a gap means seals were deleted (a
/// superuser edited a row, recomputed the chain forward and removed the seals from there).
fn unsealed_after_sealing_began(rows: &[CheckedRow]) -> Option<String> {
    let first_sealed = rows.iter().find(|row| row.mac.is_some())?.seq;
    let gap = rows.iter().find(|row| row.seq > first_sealed && row.mac.is_none())?;
    Some(format!("event {} has no keyed seal although event {first_sealed} before it is sealed", gap.seq))
}

/// `venueql audit seal-existing`: seals the rows written before this version (which had
/// no `AUDIT_HMAC_KEY`), once, after an upgrade. A venue whose plain chain does not verify
/// is refused: sealing would bless whatever was done to it. So is a venue with an
/// unsealed row after a sealed one: only rows from before sealing began may be sealed.
pub async fn seal_existing(door: &crate::tenancy::CrossTenantDoor, actor: &str) -> Result<Vec<SealReport>, AppError> {
    let key = seal::installed()?;
    let mut tx = door.open_cross_tenant(actor, "audit seal-existing").await?;
    let venues: Vec<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, slug FROM venues ORDER BY slug").fetch_all(tx.conn()).await?;
    tx.commit().await?;
    let mut reports = Vec::new();
    for (id, slug) in venues {
        let tx = door.open_cross_tenant(actor, "audit seal-existing").await?;
        let mut tx = tx.into_venue(crate::tenancy::VenueId::from_door(id)).await?;
        let rows = checked_rows(&mut tx).await?;
        if let Some(row) =
            rows.iter().enumerate().find(|(index, row)| !chain_problems(*index, row).is_empty()).map(|(_, r)| r)
        {
            return Err(AppError::Refused(format!(
                "{slug}: the audit chain does not verify at event {}; nothing was sealed there (run `venueql audit verify`)",
                row.seq
            )));
        }
        if let Some(problem) = unsealed_after_sealing_began(&rows) {
            return Err(AppError::Refused(format!(
                "{slug}: {problem}; rows written since sealing began never lack a seal, so this is tampering, not \
                 history: nothing was sealed there (run `venueql audit verify`, compare with the WORM copy)"
            )));
        }
        let unsealed: Vec<&CheckedRow> = rows.iter().filter(|row| row.mac.is_none()).collect();
        for row in &unsealed {
            insert_seal(&mut tx, key, row.seq, &row.row_hash).await?;
        }
        tx.commit().await?;
        reports.push(SealReport { venue: slug, sealed: unsealed.len() as i64 });
    }
    Ok(reports)
}
