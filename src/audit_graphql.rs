//! GraphQL surface of a venue's own audit log (`auditEvents`, AUDIT_VIEW): who did what,
//! with before/after, request id, address and time, newest first with cursor paging.
//! The log includes the venue's security events (lockouts of its staff, refused
//! cross-venue requests naming it, refresh-token reuse, invitation and credential events,
//! payment mismatches, disputes), which are written as audit rows of the venue.

use async_graphql::{Context, Enum, InputObject, Json, Object, Result, SimpleObject};
use base64::Engine;
use chrono::{DateTime, Utc};

use crate::access::Permissions;
use crate::audit::{LogEntry, LogFilter, log_page};
use crate::error::AppError;
use crate::graphql::PageInfo;
use crate::graphql::context::{commit, staff_tx};
use crate::graphql::permission_guard::Requires;

/// Who caused an audited change, by kind.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditActorType {
    /// A staff member signed in (`staff:<id>`).
    Staff,
    /// An API token (`api_token:<id>`).
    ApiToken,
    /// An OAuth client acting for itself (`oauth_client:<id>`).
    OauthClient,
    /// A platform operator at the command line (`operator:<name>`).
    Operator,
    /// venueql itself: reconciliation, retention, security checks (`venueql:<job>`).
    System,
    /// A verified Stripe event (`stripe_event:<id>`).
    StripeEvent,
    /// A person accepting an invitation (`invitee:<id>`).
    Invitee,
    /// A diner.
    Diner,
}

impl AuditActorType {
    /// The actor prefix of this kind in the audit rows.
    fn prefix(self) -> &'static str {
        match self {
            AuditActorType::Staff => "staff",
            AuditActorType::ApiToken => "api_token",
            AuditActorType::OauthClient => "oauth_client",
            AuditActorType::Operator => "operator",
            AuditActorType::System => "venueql",
            AuditActorType::StripeEvent => "stripe_event",
            AuditActorType::Invitee => "invitee",
            AuditActorType::Diner => "diner",
        }
    }

    fn from_prefix(prefix: &str) -> Option<AuditActorType> {
        [
            AuditActorType::Staff,
            AuditActorType::ApiToken,
            AuditActorType::OauthClient,
            AuditActorType::Operator,
            AuditActorType::System,
            AuditActorType::StripeEvent,
            AuditActorType::Invitee,
            AuditActorType::Diner,
        ]
        .into_iter()
        .find(|kind| kind.prefix() == prefix)
    }
}

/// Narrows the audit log.
#[derive(InputObject, Default)]
pub struct AuditEventFilter {
    /// Only these actions, e.g. `menu_item.updated`, `security.lockout` (at most 50).
    actions: Option<Vec<String>>,
    /// Only these kinds of actor.
    actor_types: Option<Vec<AuditActorType>>,
    /// At or after.
    from: Option<DateTime<Utc>>,
    /// Before.
    to: Option<DateTime<Utc>>,
}

/// One audited change or security event of the venue.
#[derive(SimpleObject)]
pub struct AuditEvent {
    /// The row's id.
    id: async_graphql::ID,
    /// Its place in the venue's tamper-evident chain (1, 2, 3…).
    sequence: i64,
    /// When it happened.
    occurred_at: DateTime<Utc>,
    /// Who: `staff:<id>`, `api_token:<id>`, `oauth_client:<id>`, `operator:<name>`, …
    actor: String,
    /// The kind of actor (None for a kind this server version does not know).
    actor_type: Option<AuditActorType>,
    /// What was done, e.g. `menu_item.updated`.
    action: String,
    /// The kind of object it was done to.
    target_type: Option<String>,
    /// The object's id.
    target_id: Option<String>,
    /// Its state before (None for creations and events).
    before: Option<Json<serde_json::Value>>,
    /// Its state after.
    after: Option<Json<serde_json::Value>>,
    /// Whether this event raised a critical alert.
    critical: bool,
    /// The HTTP request that caused it (matches the `x-request-id` response header).
    request_id: Option<String>,
    /// The client address of that request.
    ip: Option<String>,
}

impl From<LogEntry> for AuditEvent {
    fn from(row: LogEntry) -> AuditEvent {
        let critical = row.after.as_ref().and_then(|a| a.get("severity")).and_then(|s| s.as_str()) == Some("critical");
        AuditEvent {
            id: row.id.into(),
            sequence: row.seq,
            occurred_at: row.occurred_at,
            actor_type: AuditActorType::from_prefix(&row.actor_kind),
            actor: row.actor,
            action: row.action,
            target_type: row.target_type,
            target_id: row.target_id,
            before: row.before.map(Json),
            after: row.after.map(Json),
            critical,
            request_id: row.request_id,
            ip: row.ip,
        }
    }
}

/// An audit event and its cursor.
#[derive(SimpleObject)]
pub struct AuditEventEdge {
    /// Opaque position, for `after`.
    cursor: String,
    /// The event.
    node: AuditEvent,
}

/// A page of the audit log, newest first.
#[derive(SimpleObject)]
pub struct AuditEventConnection {
    /// Events with their cursors.
    edges: Vec<AuditEventEdge>,
    /// Paging.
    page_info: PageInfo,
}

fn cursor(seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("audit:{seq}"))
}

fn parse_cursor(cursor: &str) -> Result<i64, AppError> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.strip_prefix("audit:").and_then(|n| n.parse().ok()))
        .ok_or_else(|| AppError::bad_input("after is not a cursor returned by auditEvents"))
}

fn log_filter(filter: Option<AuditEventFilter>) -> Result<LogFilter, AppError> {
    let filter = filter.unwrap_or_default();
    let actions = filter.actions.unwrap_or_default();
    if actions.len() > 50 || actions.iter().any(|a| a.is_empty() || a.len() > 100) {
        return Err(AppError::bad_input("filter.actions takes at most 50 actions of 1 to 100 characters"));
    }
    if let (Some(from), Some(to)) = (filter.from, filter.to)
        && from > to
    {
        return Err(AppError::bad_input("filter.from must not be after filter.to"));
    }
    Ok(LogFilter {
        actions,
        actor_kinds: filter.actor_types.unwrap_or_default().into_iter().map(|k| k.prefix().to_string()).collect(),
        from: filter.from,
        to: filter.to,
    })
}

/// Staff queries on the venue's audit log.
#[derive(Default)]
pub struct AuditLogQuery;

#[Object]
impl AuditLogQuery {
    /// The venue's audit log, newest first (`first` 1 to 100, default 50), including its
    /// security events.
    #[graphql(
        guard = "Requires(Permissions::AUDIT_VIEW)",
        complexity = "1 + first.clamp(1, 100) as usize * child_complexity"
    )]
    async fn audit_events(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 50)] first: i32,
        after: Option<String>,
        filter: Option<AuditEventFilter>,
    ) -> Result<AuditEventConnection> {
        if !(1..=100).contains(&first) {
            return Err(AppError::bad_input("first must be between 1 and 100").into());
        }
        let before = after.as_deref().map(parse_cursor).transpose()?;
        let filter = log_filter(filter)?;
        let (_, mut tx) = staff_tx(ctx).await?;
        let (rows, more) = log_page(&mut tx, i64::from(first), before, &filter).await?;
        commit(tx).await?;
        let end_cursor = rows.last().map(|r| cursor(r.seq));
        Ok(AuditEventConnection {
            edges: rows.into_iter().map(|r| AuditEventEdge { cursor: cursor(r.seq), node: r.into() }).collect(),
            page_info: PageInfo { has_next_page: more, end_cursor },
        })
    }
}
