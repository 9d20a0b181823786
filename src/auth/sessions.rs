//! Sessions (OAuth grants): the one rule for a session's permissions ([`SessionFacts`]),
//! starting a person's session with its tokens, refresh-token rotation with reuse
//! detection, client-credentials sessions, and listing and ending a person's sessions.

use std::time::Duration;
use uuid::Uuid;

use super::oauth::{ACCESS_PREFIX, Client, OAuthError, REFRESH_PREFIX, TokenLifetimes, TokenResponse};
use super::secrets;
use crate::access::Permissions;
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// What decides a session's permissions at one moment: its client's ceiling (an SPA's is
/// every bit, a POS terminal's or integration's its own permissions), the person's
/// membership now, and the venue's rule that elevated bits need a second factor.
#[derive(Clone, Copy, Debug)]
pub struct SessionFacts {
    /// The client's ceiling, fixed when the session started.
    pub ceiling: Permissions,
    /// The person's membership now (None for a client-credentials session).
    pub membership: Option<Permissions>,
    /// Whether the venue requires MFA for elevated permissions now.
    pub venue_requires_mfa: bool,
    /// Whether the session proved a second factor when it started.
    pub session_mfa: bool,
}

impl SessionFacts {
    /// The one rule for every token venueql issues or honours: membership ∩ ceiling,
    /// minus the elevated bits when the venue requires MFA the session did not prove.
    pub fn permissions(&self) -> Permissions {
        let mut permissions = self.ceiling;
        if let Some(member) = self.membership {
            permissions &= member;
            if self.venue_requires_mfa && !self.session_mfa {
                permissions -= crate::access::ELEVATED;
            }
        }
        permissions
    }
}

/// The ceiling a client puts on every session through it.
pub fn client_ceiling(client: &Client) -> Permissions {
    if client.kind == "spa" { Permissions::all() } else { Permissions::from_db(client.permissions) }
}

/// Creates a grant (session) at the transaction's venue with `ceiling` (the client's, or
/// lower) and whether it proved a second factor; returns its id.
pub(super) async fn create_grant(
    tx: &mut VenueTx,
    client: &Client,
    ceiling: Permissions,
    staff: Option<Uuid>,
    grant_type: &str,
    mfa: bool,
) -> Result<Uuid, AppError> {
    Ok(sqlx::query_scalar(
        "INSERT INTO oauth_grants (venue_id, client_id, staff_id, grant_type, permissions, mfa) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
    )
    .bind(tx.venue().as_uuid())
    .bind(&client.id)
    .bind(staff)
    .bind(grant_type)
    .bind(ceiling.to_db())
    .bind(mfa)
    .fetch_one(tx.conn())
    .await?)
}

/// Stores a token's hash; its lifetime is rounded up to whole seconds (the session's own
/// end, checked on every use, is what bounds it exactly).
pub(super) async fn store_token(
    tx: &mut VenueTx,
    grant: Uuid,
    token: &str,
    kind: &str,
    ttl: Duration,
) -> Result<(), AppError> {
    let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    sqlx::query("SELECT private.store_oauth_token($1, $2, $3, $4)")
        .bind(secrets::hash(token))
        .bind(grant)
        .bind(kind)
        .bind(i32::try_from(seconds).unwrap_or(i32::MAX))
        .execute(tx.conn())
        .await?;
    Ok(())
}

/// Issues an access token (and a refresh token when `with_refresh`) for a grant; neither
/// outlives the session (`session_left`).
pub(super) async fn issue_tokens(
    tx: &mut VenueTx,
    grant: Uuid,
    permissions: Permissions,
    lifetimes: TokenLifetimes,
    session_left: Duration,
    with_refresh: bool,
) -> Result<TokenResponse, AppError> {
    let access_ttl = lifetimes.access.min(session_left);
    let access_token = secrets::new_secret(ACCESS_PREFIX);
    store_token(tx, grant, &access_token, "access", access_ttl).await?;
    let refresh_token = if with_refresh {
        let refresh = secrets::new_secret(REFRESH_PREFIX);
        store_token(tx, grant, &refresh, "refresh", lifetimes.refresh.min(session_left)).await?;
        Some(refresh)
    } else {
        None
    };
    Ok(TokenResponse {
        access_token,
        token_type: "Bearer",
        expires_in: access_ttl.as_secs(),
        refresh_token,
        scope: permissions.names().join(" "),
    })
}

/// The person's membership at the transaction's venue and the venue's MFA rule, now.
pub(super) async fn membership_and_rule(
    tx: &mut VenueTx,
    staff: Uuid,
) -> Result<(Option<Permissions>, bool), AppError> {
    let (bits, rule): (Option<i64>, bool) = sqlx::query_as(
        "SELECT (SELECT permissions FROM memberships WHERE venue_id = $1 AND staff_id = $2), \
                COALESCE((SELECT require_mfa_for_elevated FROM venue_settings WHERE venue_id = $1), false)",
    )
    .bind(tx.venue().as_uuid())
    .bind(staff)
    .fetch_one(tx.conn())
    .await?;
    Ok((bits.map(Permissions::from_db), rule))
}

/// Revokes a grant (and so every token of it), with an audit row.
pub(super) async fn revoke_grant(tx: &mut VenueTx, grant: Uuid, reason: &str, who: &Who) -> Result<(), AppError> {
    let revoked = sqlx::query(
        "UPDATE oauth_grants SET revoked_at = now(), revoked_reason = $3 WHERE venue_id = $1 AND id = $2 AND revoked_at IS NULL",
    )
    .bind(tx.venue().as_uuid())
    .bind(grant)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    if revoked.rows_affected() > 0 {
        let change = Change {
            action: if reason == "refresh_token_reuse" { "oauth.refresh_token_reused" } else { "oauth.grant_revoked" },
            target_type: "oauth_grant",
            target_id: grant.to_string(),
            before: None,
            after: Some(serde_json::json!({ "revoked": true, "reason": reason })),
        };
        let reused = (reason == "refresh_token_reuse").then_some(AlertKind::RefreshTokenReuse);
        audit::record_as(tx, who, reused, change).await?;
    }
    Ok(())
}

/// A person's session about to start.
#[derive(Clone, Copy, Debug)]
pub struct NewSession<'a> {
    /// The person.
    pub staff: Uuid,
    /// `authorization_code` or `pin`.
    pub grant_type: &'a str,
    /// Whether the person proved a second factor to start it.
    pub mfa: bool,
    /// Whether it gets a refresh token (hosted login) or not (PIN).
    pub with_refresh: bool,
    /// A cap below the client's ceiling for the session's whole life: a PIN set by
    /// someone else yields no bit its setter did not hold (None: the client's ceiling).
    pub cap: Option<Permissions>,
}

/// Starts a session for a person at the transaction's venue (audited as
/// `session.started`) and issues its tokens, with the permissions of [`SessionFacts`]:
/// their membership, capped by the client's ceiling and the venue's MFA rule. Returns the
/// grant id with them. Refused when the person is no longer a member, or holds nothing
/// the client may carry.
pub async fn staff_grant(
    tx: &mut VenueTx,
    client: &Client,
    session: NewSession<'_>,
    lifetimes: TokenLifetimes,
) -> Result<(Uuid, TokenResponse), OAuthError> {
    let (membership, venue_requires_mfa) = membership_and_rule(tx, session.staff).await?;
    let membership =
        membership.ok_or_else(|| OAuthError::InvalidGrant("the person no longer belongs to this venue".into()))?;
    let ceiling = session.cap.map_or(client_ceiling(client), |cap| client_ceiling(client) & cap);
    let facts = SessionFacts { ceiling, membership: Some(membership), venue_requires_mfa, session_mfa: session.mfa };
    let permissions = facts.permissions();
    if permissions.is_empty() && !membership.is_empty() {
        return Err(OAuthError::InvalidGrant(
            "none of this person's permissions may be used through this client (its ceiling, or the venue's MFA rule)"
                .into(),
        ));
    }
    let grant = create_grant(tx, client, ceiling, Some(session.staff), session.grant_type, session.mfa).await?;
    let who = Who::outside_http(crate::access::staff_actor(session.staff));
    let after = serde_json::json!({ "client_id": client.id, "grant_type": session.grant_type, "mfa": session.mfa,
        "permissions": permissions.names() });
    let change = Change {
        action: "session.started",
        target_type: "oauth_grant",
        target_id: grant.to_string(),
        before: None,
        after: Some(after),
    };
    audit::record(tx, &who, change).await?;
    let tokens = issue_tokens(tx, grant, permissions, lifetimes, lifetimes.session, session.with_refresh).await?;
    Ok((grant, tokens))
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshRow {
    venue_id: Uuid,
    grant_id: Uuid,
    expired: bool,
    first_use: bool,
}

/// `grant_type=refresh_token`: rotates the refresh token. A refresh token used twice
/// revokes its whole grant (both the thief's and the owner's tokens) and is audited.
/// Every refresh re-reads the session's facts: the membership (gone: refused), its bits
/// and the venue's MFA rule now, the session's absolute lifetime and the person's
/// session cut-off (password change or reset).
pub async fn refresh(
    db: &Db,
    lifetimes: TokenLifetimes,
    client: &Client,
    refresh_token: &str,
) -> Result<TokenResponse, OAuthError> {
    let invalid = || OAuthError::InvalidGrant("the refresh token is invalid, expired or revoked".into());
    if !secrets::looks_like(refresh_token, REFRESH_PREFIX) {
        return Err(invalid());
    }
    let mut tx = db.resolving_tx().await?;
    let row: Option<RefreshRow> = sqlx::query_as("SELECT * FROM private.use_refresh_token($1)")
        .bind(secrets::hash(refresh_token))
        .fetch_optional(tx.conn())
        .await?;
    let row = row.ok_or_else(invalid)?;
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    let grant = session_state(&mut tx, row.grant_id, lifetimes.session).await?.ok_or_else(invalid)?;
    if grant.client_id != client.id {
        return Err(invalid());
    }
    if !row.first_use {
        let who = Who::outside_http(crate::access::client_actor(&client.id));
        revoke_grant(&mut tx, row.grant_id, "refresh_token_reuse", &who).await?;
        tx.commit().await?;
        return Err(OAuthError::InvalidGrant(
            "the refresh token was already used: the session has been revoked".into(),
        ));
    }
    if row.expired || !grant.live() {
        return Err(OAuthError::InvalidGrant(
            "the session has ended (expired, revoked, its membership removed, or the password changed): sign in again"
                .into(),
        ));
    }
    sqlx::query("UPDATE oauth_grants SET last_used_at = now() WHERE venue_id = $1 AND id = $2")
        .bind(row.venue_id)
        .bind(row.grant_id)
        .execute(tx.conn())
        .await?;
    let left = grant.session_left();
    let response = issue_tokens(&mut tx, row.grant_id, grant.facts().permissions(), lifetimes, left, true).await?;
    tx.commit().await?;
    Ok(response)
}

/// `grant_type=client_credentials`: an integration client gets an access token for its
/// venue with the client's permissions.
pub async fn client_credentials(
    db: &Db,
    lifetimes: TokenLifetimes,
    client: &Client,
) -> Result<TokenResponse, OAuthError> {
    let venue = match (client.kind.as_str(), client.venue_id) {
        ("integration", Some(venue)) if client.confidential => VenueId::from_credential(venue),
        _ => return Err(OAuthError::UnauthorizedClient("only integration clients may use client_credentials".into())),
    };
    let permissions = client_ceiling(client);
    let mut tx = db.venue_tx(venue).await?;
    let grant = create_grant(&mut tx, client, client_ceiling(client), None, "client_credentials", false).await?;
    let response = issue_tokens(&mut tx, grant, permissions, lifetimes, lifetimes.session, false).await?;
    tx.commit().await?;
    Ok(response)
}

/// Ends every session of `staff` at the transaction's venue (their membership ended):
/// their tokens stop working at once.
pub async fn end_sessions_at_venue(tx: &mut VenueTx, staff: Uuid, reason: &str) -> Result<(), AppError> {
    sqlx::query(
        "UPDATE oauth_grants SET revoked_at = now(), revoked_reason = $3 \
         WHERE venue_id = $1 AND staff_id = $2 AND revoked_at IS NULL",
    )
    .bind(tx.venue().as_uuid())
    .bind(staff)
    .bind(reason)
    .execute(tx.conn())
    .await?;
    Ok(())
}

/// One of a person's sessions (grants) at the transaction's venue.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Session {
    /// Grant id.
    pub id: Uuid,
    /// The client it was issued to.
    pub client_id: String,
    /// How it started (`authorization_code`, `pin`).
    pub grant_type: String,
    /// When it started.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// When its refresh token was last used.
    pub last_used_at: chrono::DateTime<chrono::Utc>,
    /// When it ends at the latest (its absolute lifetime).
    pub expires_at: chrono::DateTime<chrono::Utc>,
    /// Whether it proved a second factor when it started.
    pub mfa: bool,
}

/// The live sessions of `staff` at the transaction's venue, newest first.
pub async fn sessions_of(tx: &mut VenueTx, staff: Uuid, max_age: Duration) -> Result<Vec<Session>, AppError> {
    Ok(sqlx::query_as(
        "SELECT id, client_id, grant_type, created_at, last_used_at, mfa, \
                created_at + make_interval(secs => $3::float8) AS expires_at \
         FROM oauth_grants WHERE venue_id = $1 AND staff_id = $2 AND revoked_at IS NULL \
           AND created_at + make_interval(secs => $3::float8) > now() \
           AND NOT private.session_cut_off(staff_id, id, created_at) \
         ORDER BY created_at DESC",
    )
    .bind(tx.venue().as_uuid())
    .bind(staff)
    .bind(max_age.as_secs_f64())
    .fetch_all(tx.conn())
    .await?)
}

/// Ends one of `staff`'s own sessions (another person's is "not found").
pub async fn revoke_own_session(tx: &mut VenueTx, who: &Who, staff: Uuid, grant: Uuid) -> Result<(), AppError> {
    let owned: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM oauth_grants WHERE venue_id = $1 AND id = $2 AND staff_id = $3 AND revoked_at IS NULL",
    )
    .bind(tx.venue().as_uuid())
    .bind(grant)
    .bind(staff)
    .fetch_optional(tx.conn())
    .await?;
    owned.ok_or(AppError::NotFound("session"))?;
    revoke_grant(tx, grant, "revoked_by_owner", who).await
}

/// A session (grant) as it stands now, with everything its permissions depend on.
#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    pub(super) client_id: String,
    pub(super) staff_id: Option<Uuid>,
    pub(super) ceiling: i64,
    pub(super) member_permissions: Option<i64>,
    pub(super) mfa: bool,
    pub(super) venue_requires_mfa: bool,
    pub(super) active: bool,
    pub(super) client_active: bool,
    pub(super) cut_off: bool,
    pub(super) seconds_left: f64,
}

impl SessionRow {
    /// Whether the session may still be used: not revoked, its client active, within its
    /// absolute lifetime, not cut off, and its person still a member.
    pub(super) fn live(&self) -> bool {
        self.active
            && self.client_active
            && !self.cut_off
            && self.seconds_left > 0.0
            && (self.staff_id.is_none() || self.member_permissions.is_some())
    }

    pub(super) fn facts(&self) -> SessionFacts {
        SessionFacts {
            ceiling: Permissions::from_db(self.ceiling),
            membership: self.member_permissions.map(Permissions::from_db),
            venue_requires_mfa: self.venue_requires_mfa,
            session_mfa: self.mfa,
        }
    }

    pub(super) fn session_left(&self) -> Duration {
        Duration::from_secs_f64(self.seconds_left.max(0.0))
    }
}

/// Reads a session of the transaction's venue with its facts (None when there is none).
pub(super) async fn session_state(
    tx: &mut VenueTx,
    grant: Uuid,
    max_age: Duration,
) -> Result<Option<SessionRow>, AppError> {
    Ok(sqlx::query_as(
        "SELECT g.client_id, g.staff_id, g.permissions AS ceiling, m.permissions AS member_permissions, g.mfa, \
                COALESCE(vs.require_mfa_for_elevated, false) AS venue_requires_mfa, g.revoked_at IS NULL AS active, \
                EXISTS (SELECT 1 FROM private.oauth_client(g.client_id)) AS client_active, \
                (g.staff_id IS NOT NULL AND private.session_cut_off(g.staff_id, g.id, g.created_at)) AS cut_off, \
                extract(epoch FROM g.created_at + make_interval(secs => $3::float8) - now())::float8 AS seconds_left \
         FROM oauth_grants g \
         LEFT JOIN memberships m ON m.venue_id = g.venue_id AND m.staff_id = g.staff_id \
         LEFT JOIN venue_settings vs ON vs.venue_id = g.venue_id \
         WHERE g.venue_id = $1 AND g.id = $2",
    )
    .bind(tx.venue().as_uuid())
    .bind(grant)
    .bind(max_age.as_secs_f64())
    .fetch_optional(tx.conn())
    .await?)
}
