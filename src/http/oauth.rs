//! The OAuth 2 token endpoint family: token, revocation and introspection (each behind one
//! client check, [`AuthenticatedClient`]), and the server's metadata. Forms in, RFC 6749
//! JSON errors out; tokens never cached. The hosted login (`/oauth/authorize`) is
//! [`super::login`].

use super::cors::CrossOrigin;
use std::collections::HashMap;

use std::net::IpAddr;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;

use super::client_addr::ClientAddr;
use crate::access::Permissions;
use crate::auth::lockout::{self, Attempt, Checked, SecretKind};
use crate::auth::oauth::{self, Client, ClientCredentials, OAuthError, TokenLifetimes};
use crate::auth::{authorization_code, oauth_tokens, pins, sessions};
use crate::error::AppError;
use crate::http::AppState;

/// A parsed `application/x-www-form-urlencoded` body or query, refusing repeated names.
pub(super) struct Form(pub(super) HashMap<String, String>);

impl Form {
    pub(super) fn parse(bytes: &[u8]) -> Result<Form, OAuthError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(bytes)
            .map_err(|_| OAuthError::InvalidRequest("the body must be application/x-www-form-urlencoded".into()))?;
        let mut map = HashMap::new();
        for (name, value) in pairs {
            if map.insert(name.clone(), value).is_some() {
                return Err(OAuthError::InvalidRequest(format!("parameter {name} is repeated")));
            }
        }
        Ok(Form(map))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::InvalidRequest(format!("{name} is required")))
    }
}

pub(super) fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// An RFC 6749 §5.2 error body.
fn oauth_error(error: OAuthError) -> Response {
    let (status, code, description) = match error {
        OAuthError::InvalidRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", d),
        OAuthError::InvalidClient(d) => (StatusCode::UNAUTHORIZED, "invalid_client", d),
        OAuthError::InvalidGrant(d) => (StatusCode::BAD_REQUEST, "invalid_grant", d),
        OAuthError::UnauthorizedClient(d) => (StatusCode::BAD_REQUEST, "unauthorized_client", d),
        OAuthError::UnsupportedGrantType(d) => (StatusCode::BAD_REQUEST, "unsupported_grant_type", d),
        OAuthError::SlowDown { retry_after, error, message } => {
            let body = serde_json::json!({ "error": error, "error_description": message });
            let mut response = no_store((StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response());
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            return response;
        }
        OAuthError::Internal(error) => {
            if let crate::error::AppError::Internal(source) = &error {
                crate::observability::report_internal(source.as_ref());
            }
            (StatusCode::INTERNAL_SERVER_ERROR, "server_error", "internal error".to_string())
        }
    };
    let body = serde_json::json!({ "error": code, "error_description": description });
    let mut response = no_store((status, axum::Json(body)).into_response());
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"venueql\""));
    }
    response
}

/// A JSON success body (never cached) or the RFC 6749 error.
fn json_or_oauth_error(result: Result<impl serde::Serialize, OAuthError>) -> Response {
    match result {
        Ok(body) => no_store(axum::Json(body).into_response()),
        Err(error) => oauth_error(error),
    }
}

/// Client authentication: `client_secret_basic`, `client_secret_post`, or a public
/// client's bare `client_id`. Using two methods at once is refused.
fn client_credentials(headers: &HeaderMap, form: &Form) -> Result<ClientCredentials, OAuthError> {
    let basic = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Basic "));
    let decode = |s: &str| percent_encoding::percent_decode_str(&s.replace('+', " ")).decode_utf8_lossy().into_owned();
    match (basic, form.get("client_secret")) {
        (Some(_), Some(_)) => Err(OAuthError::InvalidRequest("use one client authentication method, not two".into())),
        (Some(encoded), None) => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| OAuthError::InvalidClient("malformed Basic credentials".into()))?;
            let (id, secret) =
                raw.split_once(':').ok_or_else(|| OAuthError::InvalidClient("malformed Basic credentials".into()))?;
            if form.get("client_id").is_some_and(|f| f != decode(id)) {
                return Err(OAuthError::InvalidRequest("client_id differs from the authenticated client".into()));
            }
            Ok(ClientCredentials::Secret(decode(id), decode(secret)))
        }
        (None, Some(secret)) => {
            Ok(ClientCredentials::Secret(form.required("client_id")?.to_string(), secret.to_string()))
        }
        (None, None) => Ok(ClientCredentials::Public(form.required("client_id")?.to_string())),
    }
}

fn lifetimes(state: &AppState) -> TokenLifetimes {
    TokenLifetimes {
        access: state.config.access_token_ttl,
        refresh: state.config.refresh_token_ttl,
        session: state.config.session_max_age,
    }
}

/// Authenticates the client of a token, revocation or introspection request; a secret
/// is checked under the lockout per (client, address) and per address: a 256-bit secret
/// cannot be guessed, so failures from elsewhere must not lock the real client out.
async fn authenticated_client(
    state: &AppState,
    headers: &HeaderMap,
    client_addr: IpAddr,
    body: &[u8],
) -> Result<(Form, Client), OAuthError> {
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(OAuthError::InvalidRequest("send the parameters as application/x-www-form-urlencoded".into()));
    }
    let form = Form::parse(body)?;
    let credentials = client_credentials(headers, &form)?;
    let failed = || OAuthError::InvalidClient("client authentication failed".into());
    let ClientCredentials::Secret(id, _) = &credentials else {
        let client = oauth::authenticate_client(&state.db, &credentials).await?.ok_or_else(failed)?;
        return Ok((form, client));
    };
    let from_here = format!("{id}|{}", lockout::counted_address(client_addr));
    let attempt = Attempt::new(SecretKind::ClientSecret, &from_here, Some(client_addr));
    let verify = oauth::authenticate_client(&state.db, &credentials);
    match lockout::check(&state.db, state.config.lockout, attempt, verify).await? {
        Checked::Passed(client) => Ok((form, client)),
        Checked::Wrong => Err(failed()),
        Checked::Locked(wait) => Err(OAuthError::SlowDown {
            retry_after: wait,
            error: "invalid_client",
            message: format!("too many failed client authentications from this address; retry after {wait} seconds"),
        }),
    }
}

/// A browser request from another origin must come from one of the client's own.
fn check_client_origin(client: &Client, cross_origin: Option<&CrossOrigin>) -> Result<(), OAuthError> {
    match cross_origin {
        Some(CrossOrigin(origin)) if !client.allowed_origins.contains(origin) => {
            Err(OAuthError::UnauthorizedClient(format!("origin {origin} is not an allowed origin of this client")))
        }
        _ => Ok(()),
    }
}

/// A request of the token endpoint family with its client authenticated (a secret is
/// checked under the lockout) and, for a browser request from another origin, that
/// origin one of the client's own: the one client check `token`, `revoke` and
/// `introspect` share.
pub struct AuthenticatedClient {
    form: Form,
    client: Client,
    client_addr: IpAddr,
}

impl FromRequest<AppState> for AuthenticatedClient {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Response> {
        let Some(ClientAddr(client_addr)) = request.extensions().get::<ClientAddr>().copied() else {
            return Err(oauth_error(OAuthError::Internal(AppError::internal("the client address layer is missing"))));
        };
        let cross_origin = request.extensions().get::<CrossOrigin>().cloned();
        let headers = request.headers().clone();
        let body = Bytes::from_request(request, state).await.map_err(IntoResponse::into_response)?;
        let checked = async {
            let (form, client) = authenticated_client(state, &headers, client_addr, &body).await?;
            check_client_origin(&client, cross_origin.as_ref())?;
            Ok(AuthenticatedClient { form, client, client_addr })
        };
        checked.await.map_err(oauth_error)
    }
}

/// `POST /oauth/token`.
pub async fn token(State(state): State<AppState>, request: AuthenticatedClient) -> Response {
    let AuthenticatedClient { form, client, client_addr } = request;
    let result = async {
        match form.required("grant_type")? {
            "authorization_code" => {
                authorization_code::exchange_code(
                    &state.db,
                    lifetimes(&state),
                    &client,
                    form.required("code")?,
                    form.get("redirect_uri"),
                    form.get("code_verifier"),
                )
                .await
            }
            "refresh_token" => {
                sessions::refresh(&state.db, lifetimes(&state), &client, form.required("refresh_token")?).await
            }
            "client_credentials" => sessions::client_credentials(&state.db, lifetimes(&state), &client).await,
            pins::PIN_GRANT => {
                let (username, pin) = (form.required("username")?, form.required("pin")?);
                pins::grant(&state.db, lifetimes(&state), state.config.lockout, &client, username, pin, client_addr)
                    .await
            }
            other => Err(OAuthError::UnsupportedGrantType(format!("grant_type {other} is not supported"))),
        }
    }
    .await;
    json_or_oauth_error(result)
}

/// `POST /oauth/revoke` (RFC 7009): 200 whether or not the token was known.
pub async fn revoke(State(state): State<AppState>, request: AuthenticatedClient) -> Response {
    let result = async {
        oauth_tokens::revoke(&state.db, &request.client, request.form.required("token")?)
            .await
            .map_err(OAuthError::from)
    }
    .await;
    match result {
        Ok(()) => no_store(StatusCode::OK.into_response()),
        Err(error) => oauth_error(error),
    }
}

/// `POST /oauth/introspect` (RFC 7662), for confidential clients.
pub async fn introspect(State(state): State<AppState>, request: AuthenticatedClient) -> Response {
    let result = async {
        if !request.client.confidential {
            return Err(OAuthError::InvalidClient("introspection is for confidential clients".into()));
        }
        let token = request.form.required("token")?;
        oauth_tokens::introspect(&state.db, &state.issuer, &request.client, token, state.config.session_max_age)
            .await
            .map_err(OAuthError::from)
    }
    .await;
    json_or_oauth_error(result)
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414).
pub async fn metadata(State(state): State<AppState>) -> Response {
    let issuer = &state.issuer;
    axum::Json(serde_json::json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", pins::PIN_GRANT],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": Permissions::all().names(),
        "authorization_response_iss_parameter_supported": true,
    }))
    .into_response()
}
