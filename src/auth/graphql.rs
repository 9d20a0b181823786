//! The signed-in person's own credentials (TOTP, password, sessions) and the venue's API
//! clients and tokens.

use async_graphql::{Context, Enum, ID, InputObject, Object, Result, SimpleObject};
use uuid::Uuid;

use super::login::Reauth;
use super::{clients, login, reset, totp};
use crate::access::{Permission, Permissions};
use crate::audit::{self, Change};
use crate::error::AppError;
use crate::graphql::context::{self, RequestCtx, commit, staff_tx};
use crate::graphql::parse_id;
use crate::graphql::permission_guard::Requires;

/// What an authenticator app needs to enrol.
#[derive(SimpleObject)]
pub struct TotpEnrollment {
    /// The shared secret in base32, for manual entry.
    secret: String,
    /// `otpauth://` URI for authenticator apps.
    otpauth_uri: String,
    /// The URI as a QR code (SVG document).
    qr_code_svg: String,
}

/// The signed-in person, or FORBIDDEN for API tokens and integrations.
fn person(caller: &RequestCtx) -> Result<Uuid, AppError> {
    caller.principal()?.staff_id().ok_or(AppError::Forbidden)
}

/// The session (grant) the request is made with, when it is a person's.
fn current_session(caller: &RequestCtx) -> Option<Uuid> {
    match &caller.principal {
        Some(crate::access::Principal::Staff { grant_id, .. }) => Some(*grant_id),
        _ => None,
    }
}

/// A fresh proof of who the person is, for changing a credential in the same request:
/// exactly one of the current password or a code from their authenticator app.
#[derive(InputObject, Clone)]
pub struct ReauthInput {
    /// The current password.
    password: Option<String>,
    /// A 6-digit TOTP code (or a recovery code).
    totp_code: Option<String>,
}

impl ReauthInput {
    fn proof(&self) -> Result<Reauth, AppError> {
        match (&self.password, &self.totp_code) {
            (Some(password), None) => Ok(Reauth::Password(password.clone())),
            (None, Some(code)) => Ok(Reauth::TotpCode(code.clone())),
            _ => Err(AppError::bad_input("reauth needs exactly one of password or totpCode")),
        }
    }
}

/// Checks a step-up proof of `staff` under the lockout (a sign-in's counters).
pub async fn step_up(ctx: &Context<'_>, staff: Uuid, reauth: Option<&ReauthInput>) -> Result<(), AppError> {
    let reauth = reauth.ok_or_else(|| {
        AppError::bad_input("changing your own credentials needs reauth: { password } or { totpCode }")
    })?;
    let caller = context::staff(ctx)?;
    let config = context::config(ctx)?;
    let ip = caller.client;
    let master = config.keys.master()?;
    let session = current_session(caller);
    login::reauthenticate(context::db(ctx)?, config.lockout, master, staff, &reauth.proof()?, ip, session).await
}

async fn audit_mfa(ctx: &Context<'_>, action: &str, staff: Uuid) -> Result<(), AppError> {
    let (caller, mut tx) = staff_tx(ctx).await?;
    let change = Change { action, target_type: "staff", target_id: staff.to_string(), before: None, after: None };
    audit::record(&mut tx, &caller.who(), change).await?;
    commit(tx).await
}

/// Two-factor authentication of the signed-in person. Needs no permission bits, only a
/// person's token (API tokens and integrations have no second factor to manage).
#[derive(Default)]
pub struct MfaMutation;

#[Object]
impl MfaMutation {
    /// Starts (or restarts) TOTP enrolment; confirm it with `confirmTotpEnrollment`.
    /// Needs the current password in `reauth` (a stolen access token cannot enrol a second
    /// factor of its own).
    async fn begin_totp_enrollment(&self, ctx: &Context<'_>, reauth: ReauthInput) -> Result<TotpEnrollment> {
        let caller = context::staff(ctx)?;
        let staff = person(caller)?;
        step_up(ctx, staff, Some(&reauth)).await?;
        let db = context::db(ctx)?;
        let email = login::email_of(db, staff).await?.ok_or(AppError::Forbidden)?;
        let master = context::config(ctx)?.keys.master()?;
        let enrollment = totp::begin_enrollment(db, master, staff, &email).await?;
        Ok(TotpEnrollment {
            secret: enrollment.secret,
            otpauth_uri: enrollment.otpauth_uri,
            qr_code_svg: enrollment.qr_svg,
        })
    }

    /// Turns TOTP on with a first code; returns 10 single-use recovery codes (shown once).
    async fn confirm_totp_enrollment(&self, ctx: &Context<'_>, code: String) -> Result<Vec<String>> {
        let caller = context::staff(ctx)?;
        let staff = person(caller)?;
        let config = context::config(ctx)?;
        let ip = caller.client;
        let master = config.keys.master()?;
        let codes = login::confirm_totp(
            context::db(ctx)?,
            config.lockout,
            master,
            login::CodeAttempt { staff, code: &code, ip },
        )
        .await?;
        audit_mfa(ctx, "mfa.enabled", staff).await?;
        Ok(codes)
    }

    /// Turns TOTP off. Needs the current password or a code in `reauth`, checked under
    /// the sign-in lockout.
    async fn disable_totp(&self, ctx: &Context<'_>, reauth: ReauthInput) -> Result<bool> {
        let staff = person(context::staff(ctx)?)?;
        step_up(ctx, staff, Some(&reauth)).await?;
        totp::disable(context::db(ctx)?, staff).await?;
        audit_mfa(ctx, "mfa.disabled", staff).await?;
        Ok(true)
    }

    /// Changes the signed-in person's password: the current one is checked like a sign-in,
    /// the new one against the rules and the breach corpus. Every other session of the
    /// person (at every venue) ends; this one goes on.
    async fn change_password(&self, ctx: &Context<'_>, current_password: String, new_password: String) -> Result<bool> {
        let config = context::config(ctx)?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let staff = person(caller)?;
        let change = reset::PasswordChange {
            staff,
            session: current_session(caller),
            current: &current_password,
            new: &new_password,
            ip: caller.client,
        };
        let master = config.keys.master()?;
        let db = context::db(ctx)?;
        let breach = context::service::<super::breach::BreachCheck>(ctx)?;
        reset::change_password(db, &mut tx, &caller.who(), config.lockout, breach, master, change).await?;
        commit(tx).await?;
        Ok(true)
    }
}

/// An OAuth client of the venue: an integration, a POS terminal or the venue's own
/// browser app (SPA).
#[derive(SimpleObject)]
pub struct ApiClient {
    /// Client id (for OAuth requests).
    id: ID,
    /// Display name.
    name: String,
    /// What it is.
    kind: ApiClientKind,
    /// Permissions of its client-credentials tokens (integrations) or the most its PIN
    /// sessions carry (POS); empty for an SPA, whose sessions carry the person's own.
    permissions: Vec<Permission>,
    /// Where the hosted login may send people back (SPA clients).
    redirect_uris: Vec<String>,
    /// Web origins the SPA is served from: browsers there may call the token endpoint and
    /// the API with this client's tokens (CORS).
    allowed_origins: Vec<String>,
    /// When it was registered.
    created_at: chrono::DateTime<chrono::Utc>,
}

impl From<clients::VenueClient> for ApiClient {
    fn from(c: clients::VenueClient) -> ApiClient {
        ApiClient {
            id: c.id.into(),
            name: c.name,
            kind: match c.kind.as_str() {
                "pos" => ApiClientKind::Pos,
                "spa" => ApiClientKind::Spa,
                _ => ApiClientKind::Integration,
            },
            permissions: Permission::list(Permissions::from_db(c.permissions)),
            redirect_uris: c.redirect_uris,
            allowed_origins: c.allowed_origins,
            created_at: c.created_at,
        }
    }
}

/// Kinds of venue-bound clients.
#[derive(Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiClientKind {
    /// A server of an integration (client credentials).
    Integration,
    /// A registered POS terminal (PIN grant).
    Pos,
    /// The venue's own browser app: public, PKCE login through the hosted page, to this
    /// venue only.
    Spa,
}

impl ApiClientKind {
    fn as_str(self) -> &'static str {
        match self {
            ApiClientKind::Integration => "integration",
            ApiClientKind::Pos => "pos",
            ApiClientKind::Spa => "spa",
        }
    }
}

/// A new client and its secret (shown once).
#[derive(SimpleObject)]
pub struct CreatedApiClient {
    /// The client.
    client: ApiClient,
    /// Its secret; store it now, it is not shown again. Null for an SPA client, which is
    /// public (it proves itself with PKCE).
    client_secret: Option<String>,
}

/// Input of `createApiClient`.
#[derive(InputObject)]
pub struct CreateApiClientInput {
    /// Display name.
    name: String,
    /// Integration, POS terminal or SPA.
    kind: ApiClientKind,
    /// Permissions of its client-credentials tokens (only bits the caller holds; none for
    /// an SPA).
    #[graphql(default)]
    permissions: Vec<Permission>,
    /// SPA only: exact redirect URIs (https; http only on localhost), 1 to 10.
    #[graphql(default)]
    redirect_uris: Vec<String>,
    /// SPA only: web origins it is served from (e.g. `https://kitchen.example.com`), at
    /// most 20.
    #[graphql(default)]
    allowed_origins: Vec<String>,
}

/// One of the caller's sessions at this venue.
#[derive(SimpleObject)]
pub struct Session {
    /// Session (grant) id.
    id: ID,
    /// The client it was issued to.
    client_id: String,
    /// How it started.
    grant_type: String,
    /// When it started.
    created_at: chrono::DateTime<chrono::Utc>,
    /// When it was last refreshed.
    last_used_at: chrono::DateTime<chrono::Utc>,
    /// When it ends at the latest, however often it is refreshed (`SESSION_MAX_AGE_SECS`).
    expires_at: chrono::DateTime<chrono::Utc>,
    /// Whether it proved a second factor when it started (a venue requiring MFA gives
    /// elevated permissions only to such sessions).
    mfa: bool,
    /// Whether this request is made with it.
    current: bool,
}

/// API clients and the caller's own sessions.
#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The venue's integration, POS and SPA clients. Requires API_CLIENTS_MANAGE.
    #[graphql(guard = "Requires(Permissions::API_CLIENTS_MANAGE)")]
    async fn api_clients(&self, ctx: &Context<'_>) -> Result<Vec<ApiClient>> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let clients = clients::venue_clients(&mut tx).await?;
        commit(tx).await?;
        Ok(clients.into_iter().map(ApiClient::from).collect())
    }

    /// The caller's own active sessions at this venue (people only).
    async fn my_sessions(&self, ctx: &Context<'_>) -> Result<Vec<Session>> {
        let max_age = context::config(ctx)?.session_max_age;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let staff = person(caller)?;
        let current = current_session(caller);
        let sessions = crate::auth::sessions::sessions_of(&mut tx, staff, max_age).await?;
        commit(tx).await?;
        Ok(sessions
            .into_iter()
            .map(|s| Session {
                id: s.id.into(),
                client_id: s.client_id,
                grant_type: s.grant_type,
                created_at: s.created_at,
                last_used_at: s.last_used_at,
                expires_at: s.expires_at,
                mfa: s.mfa,
                current: Some(s.id) == current,
            })
            .collect())
    }
}

/// API-client management and ending one's own sessions; each writes an audit event.
#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Registers an integration, POS or SPA client (audited). Requires API_CLIENTS_MANAGE.
    #[graphql(guard = "Requires(Permissions::API_CLIENTS_MANAGE)")]
    async fn create_api_client(&self, ctx: &Context<'_>, input: CreateApiClientInput) -> Result<CreatedApiClient> {
        let (caller, mut tx) = staff_tx(ctx).await?;
        let new = clients::NewClient {
            kind: input.kind.as_str(),
            name: &input.name,
            redirect_uris: &input.redirect_uris,
            allowed_origins: &input.allowed_origins,
            permissions: Permission::set(&input.permissions),
        };
        let (client, secret) = clients::create_venue_client(&mut tx, &caller.who(), caller.permissions, &new).await?;
        commit(tx).await?;
        Ok(CreatedApiClient { client: client.into(), client_secret: secret })
    }

    /// Replaces the web origins of one of the venue's SPA clients (audited); browsers on
    /// other origins can then no longer use its tokens. Requires API_CLIENTS_MANAGE.
    #[graphql(guard = "Requires(Permissions::API_CLIENTS_MANAGE)")]
    async fn set_api_client_origins(
        &self,
        ctx: &Context<'_>,
        client_id: ID,
        allowed_origins: Vec<String>,
    ) -> Result<ApiClient> {
        let (caller, mut tx) = staff_tx(ctx).await?;
        let client =
            clients::set_venue_client_origins(&mut tx, &caller.who(), client_id.as_str(), &allowed_origins).await?;
        commit(tx).await?;
        Ok(client.into())
    }

    /// Revokes a client; its tokens stop working at once. Requires API_CLIENTS_MANAGE.
    #[graphql(guard = "Requires(Permissions::API_CLIENTS_MANAGE)")]
    async fn revoke_api_client(&self, ctx: &Context<'_>, client_id: ID) -> Result<ID> {
        let (caller, mut tx) = staff_tx(ctx).await?;
        clients::revoke_venue_client(&mut tx, &caller.who(), client_id.as_str()).await?;
        commit(tx).await?;
        Ok(client_id)
    }

    /// Ends one of the caller's own sessions at this venue (people only).
    async fn revoke_session(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let grant = parse_id(&id, "id")?;
        let (caller, mut tx) = staff_tx(ctx).await?;
        let staff = person(caller)?;
        crate::auth::sessions::revoke_own_session(&mut tx, &caller.who(), staff, grant).await?;
        commit(tx).await?;
        Ok(id)
    }
}
