//! The OAuth 2 authorization server's logic: clients, authorization codes with PKCE
//! (S256 only), grants (sessions) with access and refresh tokens (rotation with reuse
//! detection), client credentials, verification, revocation and introspection.
//! HTTP framing (forms, RFC 6749 error bodies) lives in `http::oauth`.

use std::time::Duration;

use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{INVALID_TOKEN, secrets};
use crate::access::{Caller, Permissions, Principal};
use crate::audit::alerts::AlertKind;
use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// Prefix of client ids.
pub const CLIENT_ID_PREFIX: &str = "vqc_";
/// Prefix of client secrets.
pub const CLIENT_SECRET_PREFIX: &str = "vqcs_";
/// Prefix of access tokens.
pub const ACCESS_PREFIX: &str = "vqoa_";
/// Prefix of refresh tokens.
pub const REFRESH_PREFIX: &str = "vqor_";
/// Prefix of authorization codes.
pub const CODE_PREFIX: &str = "vqoc_";
/// Lifetime of an authorization code.
pub const CODE_TTL_SECS: i32 = 60;

/// An RFC 6749 §5.2 error: `error` code plus a description for the developer.
#[derive(Debug)]
pub enum OAuthError {
    /// Missing, repeated or malformed parameter.
    InvalidRequest(String),
    /// Client authentication failed.
    InvalidClient(String),
    /// Code, refresh token or verifier is invalid, expired, revoked or someone else's.
    InvalidGrant(String),
    /// This client may not use this grant type.
    UnauthorizedClient(String),
    /// Unknown grant type.
    UnsupportedGrantType(String),
    /// Too many failed secret checks (a client secret, a PIN): 429 with `error` (an RFC
    /// 6749 code), `message` saying which secret, and Retry-After.
    SlowDown {
        /// Seconds until another attempt may be checked.
        retry_after: u32,
        /// `invalid_client` or `invalid_grant`.
        error: &'static str,
        /// What was locked, for people.
        message: String,
    },
    /// Anything else (logged; the body says only "server_error").
    Internal(AppError),
}

impl From<AppError> for OAuthError {
    fn from(error: AppError) -> OAuthError {
        match error {
            AppError::BadUserInput(message) => OAuthError::InvalidRequest(message),
            other => OAuthError::Internal(other),
        }
    }
}

impl From<sqlx::Error> for OAuthError {
    fn from(error: sqlx::Error) -> OAuthError {
        OAuthError::Internal(error.into())
    }
}

/// Token and session lifetimes from the configuration.
#[derive(Clone, Copy, Debug)]
pub struct TokenLifetimes {
    /// Access tokens.
    pub access: Duration,
    /// Refresh tokens.
    pub refresh: Duration,
    /// A session's absolute lifetime, however often it is refreshed (`SESSION_MAX_AGE_SECS`).
    pub session: Duration,
}

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

/// The token endpoint's success body (RFC 6749 §5.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    /// The bearer token.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    /// The next refresh token (authorization-code and PIN grants).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The permission names granted, space-separated.
    pub scope: String,
}

/// A registered client.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct Client {
    /// Client id.
    pub id: String,
    /// `spa`, `integration` or `pos`.
    pub kind: String,
    /// Display name.
    pub name: String,
    /// The venue of an integration or POS client.
    pub venue_id: Option<Uuid>,
    /// Exact redirect URIs (SPA clients).
    pub redirect_uris: Vec<String>,
    /// Permissions of client-credentials tokens (integration clients).
    pub permissions: i64,
    /// Whether it has a secret.
    pub confidential: bool,
    /// Web origins a browser may call the token endpoint and the API from (SPA clients).
    pub allowed_origins: Vec<String>,
}

/// Finds an active client.
pub async fn find_client(db: &Db, id: &str) -> Result<Option<Client>, AppError> {
    if id.len() > 100 {
        return Ok(None);
    }
    Ok(sqlx::query_as(
        "SELECT id, kind, name, venue_id, redirect_uris, permissions, confidential, allowed_origins \
         FROM private.oauth_client($1)",
    )
    .bind(id)
    .fetch_optional(db.platform_level())
    .await?)
}

/// How a client authenticated at the token, revocation or introspection endpoint.
#[derive(Debug)]
pub enum ClientCredentials {
    /// A public client names itself.
    Public(String),
    /// A confidential client with its secret (Basic or POST body).
    Secret(String, String),
}

/// Resolves and authenticates the client; None when that fails. Confidential clients
/// must present their secret; public clients must not present one.
pub async fn authenticate_client(db: &Db, credentials: &ClientCredentials) -> Result<Option<Client>, AppError> {
    let id = match credentials {
        ClientCredentials::Public(id) | ClientCredentials::Secret(id, _) => id,
    };
    let Some(client) = find_client(db, id).await? else { return Ok(None) };
    match (credentials, client.confidential) {
        (ClientCredentials::Public(_), false) => Ok(Some(client)),
        (ClientCredentials::Secret(_, secret), true) => {
            let ok: bool = sqlx::query_scalar("SELECT private.authenticate_oauth_client($1, $2)")
                .bind(&client.id)
                .bind(secrets::hash(secret))
                .fetch_one(db.platform_level())
                .await?;
            Ok(ok.then_some(client))
        }
        _ => Ok(None),
    }
}

/// Whether a PKCE verifier is well-formed (RFC 7636 §4.1: 43-128 unreserved characters).
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// `BASE64URL(SHA256(verifier))`, the S256 challenge of a verifier.
pub fn s256_challenge(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Issues an authorization code for `staff` at `venue` (the login page calls this once
/// the person has authenticated and chosen the venue); `mfa` says whether this login
/// proved a second factor, which the session then carries.
pub async fn issue_code(
    db: &Db,
    venue: VenueId,
    staff: Uuid,
    client: &Client,
    redirect_uri: &str,
    code_challenge: &str,
    mfa: bool,
) -> Result<String, AppError> {
    if client.venue_id.is_some_and(|own| own != venue.as_uuid()) {
        return Err(AppError::Refused("this app signs people in to its own venue only".into()));
    }
    let code = secrets::new_secret(CODE_PREFIX);
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("SELECT private.store_oauth_code($1, $2, $3, $4, $5, $6, $7)")
        .bind(secrets::hash(&code))
        .bind(&client.id)
        .bind(staff)
        .bind(redirect_uri)
        .bind(code_challenge)
        .bind(CODE_TTL_SECS)
        .bind(mfa)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(code)
}

/// Creates a grant (session) at the transaction's venue with `ceiling` (the client's, or
/// lower) and whether it proved a second factor; returns its id.
async fn create_grant(
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
async fn store_token(tx: &mut VenueTx, grant: Uuid, token: &str, kind: &str, ttl: Duration) -> Result<(), AppError> {
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
async fn issue_tokens(
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
async fn membership_and_rule(tx: &mut VenueTx, staff: Uuid) -> Result<(Option<Permissions>, bool), AppError> {
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
async fn revoke_grant(tx: &mut VenueTx, grant: Uuid, reason: &str, who: &Who) -> Result<(), AppError> {
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

#[derive(sqlx::FromRow)]
struct CodeRow {
    client_id: String,
    staff_id: Uuid,
    venue_id: Uuid,
    redirect_uri: String,
    code_challenge: String,
    expired: bool,
    used: bool,
    grant_id: Option<Uuid>,
    mfa: bool,
}

/// `grant_type=authorization_code`: checks client, redirect URI and PKCE verifier before
/// using the code; a replayed code revokes the grant it was exchanged for.
pub async fn exchange_code(
    db: &Db,
    lifetimes: TokenLifetimes,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    verifier: Option<&str>,
) -> Result<TokenResponse, OAuthError> {
    let verifier = verifier.ok_or_else(|| OAuthError::InvalidRequest("code_verifier is required (PKCE)".into()))?;
    if !valid_verifier(verifier) {
        return Err(OAuthError::InvalidRequest(
            "code_verifier must be 43-128 characters of A-Z a-z 0-9 - . _ ~".into(),
        ));
    }
    let invalid = || OAuthError::InvalidGrant("the authorization code is invalid, expired or already used".into());
    if !secrets::looks_like(code, CODE_PREFIX) {
        return Err(invalid());
    }
    let hash = secrets::hash(code);
    let mut tx = db.resolving_tx().await?;
    let row: Option<CodeRow> =
        sqlx::query_as("SELECT * FROM private.peek_oauth_code($1)").bind(&hash).fetch_optional(tx.conn()).await?;
    let row = row.ok_or_else(invalid)?;
    if row.client_id != client.id {
        return Err(invalid());
    }
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    if row.used {
        if let Some(grant) = row.grant_id {
            let who = Who::outside_http(crate::access::client_actor(&client.id));
            revoke_grant(&mut tx, grant, "authorization_code_replayed", &who).await?;
            tx.commit().await?;
        }
        return Err(invalid());
    }
    if row.expired {
        return Err(invalid());
    }
    if redirect_uri != Some(row.redirect_uri.as_str()) {
        return Err(OAuthError::InvalidGrant("redirect_uri does not match the authorization request".into()));
    }
    if s256_challenge(verifier) != row.code_challenge {
        return Err(OAuthError::InvalidGrant("code_verifier does not match the code_challenge".into()));
    }
    let redeemed: bool =
        sqlx::query_scalar("SELECT private.redeem_oauth_code($1)").bind(&hash).fetch_one(tx.conn()).await?;
    if !redeemed {
        return Err(invalid());
    }
    let session = NewSession {
        staff: row.staff_id,
        grant_type: "authorization_code",
        mfa: row.mfa,
        with_refresh: true,
        cap: None,
    };
    let (grant, response) = staff_grant(&mut tx, client, session, lifetimes).await?;
    sqlx::query("SELECT private.attach_code_grant($1, $2)").bind(&hash).bind(grant).execute(tx.conn()).await?;
    tx.commit().await?;
    Ok(response)
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
struct RefreshRow {
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

#[derive(sqlx::FromRow)]
struct TokenRow {
    venue_id: Uuid,
    grant_id: Uuid,
    kind: String,
    issued_at: chrono::DateTime<chrono::Utc>,
    expires_at: chrono::DateTime<chrono::Utc>,
    live: bool,
}

/// A session (grant) as it stands now, with everything its permissions depend on.
#[derive(sqlx::FromRow)]
struct SessionRow {
    client_id: String,
    staff_id: Option<Uuid>,
    ceiling: i64,
    member_permissions: Option<i64>,
    mfa: bool,
    venue_requires_mfa: bool,
    active: bool,
    client_active: bool,
    cut_off: bool,
    seconds_left: f64,
}

impl SessionRow {
    /// Whether the session may still be used: not revoked, its client active, within its
    /// absolute lifetime, not cut off, and its person still a member.
    fn live(&self) -> bool {
        self.active
            && self.client_active
            && !self.cut_off
            && self.seconds_left > 0.0
            && (self.staff_id.is_none() || self.member_permissions.is_some())
    }

    fn facts(&self) -> SessionFacts {
        SessionFacts {
            ceiling: Permissions::from_db(self.ceiling),
            membership: self.member_permissions.map(Permissions::from_db),
            venue_requires_mfa: self.venue_requires_mfa,
            session_mfa: self.mfa,
        }
    }

    fn session_left(&self) -> Duration {
        Duration::from_secs_f64(self.seconds_left.max(0.0))
    }
}

/// Reads a session of the transaction's venue with its facts (None when there is none).
async fn session_state(tx: &mut VenueTx, grant: Uuid, max_age: Duration) -> Result<Option<SessionRow>, AppError> {
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

/// A token's row and its live session, under the token's venue (None when anything is off).
async fn live_token(
    db: &Db,
    token: &str,
    max_age: Duration,
) -> Result<Option<(TokenRow, SessionRow, VenueTx)>, AppError> {
    let mut tx = db.resolving_tx().await?;
    let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM private.lookup_oauth_token($1)")
        .bind(secrets::hash(token))
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row.filter(|r| r.live) else { return Ok(None) };
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    let session = session_state(&mut tx, row.grant_id, max_age).await?;
    Ok(session.filter(SessionRow::live).map(|session| (row, session, tx)))
}

/// Verifies an OAuth access token: live, its session live (see [`SessionRow::live`]).
/// Permissions are those of [`SessionFacts`] now, so a membership change or the venue
/// turning on its MFA rule takes effect on the next request.
pub async fn verify_access_token(db: &Db, token: &str, max_age: Duration) -> Result<Caller, AppError> {
    if !secrets::looks_like(token, ACCESS_PREFIX) {
        return Err(INVALID_TOKEN);
    }
    let Some((row, grant, tx)) = live_token(db, token, max_age).await? else { return Err(INVALID_TOKEN) };
    tx.commit().await?;
    if row.kind != "access" {
        return Err(INVALID_TOKEN);
    }
    let principal = match grant.staff_id {
        Some(staff_id) => Principal::Staff { staff_id, grant_id: row.grant_id },
        None => Principal::Client { client_id: grant.client_id.clone(), grant_id: row.grant_id },
    };
    Ok(Caller {
        venue: VenueId::from_credential(row.venue_id),
        principal,
        permissions: grant.facts().permissions(),
        client_id: Some(grant.client_id.clone()),
    })
}

/// RFC 7009 revocation by the client the token was issued to. Revoking a refresh token
/// ends its whole grant; revoking an access token ends that token. Unknown tokens and
/// other clients' tokens are ignored (the endpoint answers 200 either way).
pub async fn revoke(db: &Db, client: &Client, token: &str) -> Result<(), AppError> {
    if !secrets::looks_like(token, ACCESS_PREFIX) && !secrets::looks_like(token, REFRESH_PREFIX) {
        return Ok(());
    }
    let mut tx = db.resolving_tx().await?;
    let row: Option<TokenRow> = sqlx::query_as("SELECT * FROM private.lookup_oauth_token($1)")
        .bind(secrets::hash(token))
        .fetch_optional(tx.conn())
        .await?;
    let Some(row) = row else { return Ok(()) };
    let mut tx = tx.into_venue(VenueId::from_credential(row.venue_id)).await?;
    let owner: Option<String> =
        sqlx::query_scalar("SELECT client_id FROM oauth_grants WHERE venue_id = $1 AND id = $2")
            .bind(row.venue_id)
            .bind(row.grant_id)
            .fetch_optional(tx.conn())
            .await?;
    if owner.as_deref() != Some(client.id.as_str()) {
        return Ok(());
    }
    if row.kind == "refresh" {
        let who = Who::outside_http(crate::access::client_actor(&client.id));
        revoke_grant(&mut tx, row.grant_id, "revoked_by_client", &who).await?;
    } else {
        sqlx::query("SELECT private.revoke_oauth_token($1)").bind(secrets::hash(token)).execute(tx.conn()).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// RFC 7662 introspection for a confidential client. Tokens of another venue than the
/// client's, and anything expired, revoked or unknown, are `{"active": false}`.
pub async fn introspect(
    db: &Db,
    issuer: &str,
    client: &Client,
    token: &str,
    max_age: Duration,
) -> Result<serde_json::Value, AppError> {
    let inactive = serde_json::json!({ "active": false });
    if !secrets::looks_like(token, ACCESS_PREFIX) && !secrets::looks_like(token, REFRESH_PREFIX) {
        return Ok(inactive);
    }
    let Some((row, grant, tx)) = live_token(db, token, max_age).await? else { return Ok(inactive) };
    tx.commit().await?;
    if client.venue_id != Some(row.venue_id) {
        return Ok(inactive);
    }
    let subject = grant.staff_id.map_or_else(|| grant.client_id.clone(), |s| s.to_string());
    Ok(serde_json::json!({
        "active": true,
        "scope": grant.facts().permissions().names().join(" "),
        "client_id": grant.client_id,
        "token_type": if row.kind == "access" { "access_token" } else { "refresh_token" },
        "exp": row.expires_at.timestamp(),
        "iat": row.issued_at.timestamp(),
        "sub": subject,
        "iss": issuer,
        "venue_id": row.venue_id,
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_matches_rfc_7636_appendix_b() {
        assert_eq!(
            s256_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn verifiers_are_43_to_128_unreserved_characters() {
        assert!(valid_verifier(&"a".repeat(43)) && valid_verifier(&"a-._~".repeat(25)));
        assert!(
            !valid_verifier(&"a".repeat(42))
                && !valid_verifier(&"a".repeat(129))
                && !valid_verifier(&format!("{}+", "a".repeat(43)))
        );
    }
}
