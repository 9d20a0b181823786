//! CORS for the doors browser apps call from their own origins. A request without an
//! `Origin` header (a server, curl) or from venueql's own origin passes untouched. From
//! any other origin:
//!
//! - the staff API and the token and revocation endpoints answer origins some active SPA
//!   client lists; the handler then checks the origin against the very client the token
//!   or `client_id` belongs to ([`CrossOrigin`]);
//! - a venue's public endpoint answers the origins in that venue's settings.
//!
//! A preflight from an allowed origin gets 204 with the allowed method and headers
//! (cached `MAX_AGE_SECS`); from any other origin 403 without CORS headers, and so does
//! the request itself, which then runs nothing. Allowed responses carry the origin itself
//! (never `*`), never `Access-Control-Allow-Credentials` (tokens travel in headers, no
//! cookie is involved), and `Vary: Origin`.
//!
//! tower-http's `CorsLayer` decides per origin before the handler runs; here the decision
//! also depends on the credential, known only after authentication, and a refused origin
//! must be refused rather than merely left unreadable, so this is a small middleware.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;
use crate::http::AppState;

/// How long browsers may cache a preflight answer.
const MAX_AGE_SECS: u32 = 600;
/// Request headers a browser app may send.
const ALLOWED_HEADERS: &str = "authorization, content-type, x-request-id";
/// Response headers a browser app may read besides the safelisted ones.
const EXPOSED_HEADERS: &str = "retry-after, x-request-id";

/// The other origin a browser request came from, once the door allowed it; the handler
/// checks it against the credential's client.
#[derive(Clone, Debug)]
pub struct CrossOrigin(pub String);

/// Which allowance a door checks.
#[derive(Clone, Copy, Debug)]
enum Door {
    /// `/graphql`: origins of active SPA clients; errors in GraphQL's shape.
    Staff,
    /// `/oauth/token`, `/oauth/revoke`: the same origins; errors in OAuth's shape.
    OAuth,
    /// `/v/{slug}/graphql`: the venue's own list.
    Public,
}

/// The `Origin` of a cross-origin browser request: present, and neither the server's own
/// (the `Host` the request was sent to) nor the issuer's.
pub fn foreign_origin(headers: &HeaderMap, issuer: &str) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().unwrap_or("null").to_string();
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default();
    let authority = origin.split_once("://").map(|(_, rest)| rest).unwrap_or_default();
    let own = (!host.is_empty() && authority.eq_ignore_ascii_case(host)) || origin.eq_ignore_ascii_case(issuer);
    (!own).then_some(origin)
}

async fn allowed(state: &AppState, door: Door, origin: &str, path: &str) -> Result<bool, AppError> {
    match door {
        Door::Staff | Door::OAuth => crate::auth::clients::origin_registered(&state.db, origin).await,
        Door::Public => {
            let slug = path.strip_prefix("/v/").and_then(|rest| rest.strip_suffix("/graphql")).unwrap_or_default();
            let Some(venue) = crate::venues::find_by_slug(&state.db, slug).await? else { return Ok(false) };
            Ok(crate::venues::public_origins(&state.db, venue.venue_id()).await?.iter().any(|o| o == origin))
        }
    }
}

/// The refusal of an origin, in the door's error shape, without CORS headers.
fn refused(door: Door, origin: &str) -> Response {
    let message = match door {
        Door::Public => format!(
            "origin {origin} may not call this venue's endpoint: the venue lists its diner pages' origins in \
             venueSettings.allowedOrigins"
        ),
        Door::Staff | Door::OAuth => format!(
            "origin {origin} may not call this endpoint: register it on your SPA client (allowedOrigins, or \
             `venueql admin create-client --origin`)"
        ),
    };
    let mut response = match door {
        Door::OAuth => {
            let body = serde_json::json!({ "error": "invalid_request", "error_description": message });
            (StatusCode::FORBIDDEN, axum::Json(body)).into_response()
        }
        Door::Staff | Door::Public => super::error_response(StatusCode::FORBIDDEN, "FORBIDDEN", &message),
    };
    vary(response.headers_mut());
    response
}

fn vary(headers: &mut HeaderMap) {
    headers.append(header::VARY, HeaderValue::from_static("origin"));
}

/// Marks a response readable by `origin`.
fn allow(mut response: Response, origin: &str) -> Response {
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
    vary(headers);
    response
}

fn preflight(origin: &str) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("POST"));
    headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
    headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(MAX_AGE_SECS));
    headers.append(header::VARY, HeaderValue::from_static("access-control-request-method"));
    headers.append(header::VARY, HeaderValue::from_static("access-control-request-headers"));
    allow(response, origin)
}

async fn guard(state: AppState, door: Door, mut request: Request, next: Next) -> Response {
    let Some(origin) = foreign_origin(request.headers(), &state.issuer) else {
        let mut response = next.run(request).await;
        vary(response.headers_mut());
        return response;
    };
    let is_preflight =
        request.method() == Method::OPTIONS && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    match allowed(&state, door, &origin, request.uri().path()).await {
        Ok(true) if is_preflight => preflight(&origin),
        Ok(true) => {
            request.extensions_mut().insert(CrossOrigin(origin.clone()));
            allow(next.run(request).await, &origin)
        }
        Ok(false) => refused(door, &origin),
        Err(error) => {
            if let AppError::Internal(source) = &error {
                crate::observability::report_internal(source.as_ref());
            }
            super::error_response(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
        }
    }
}

/// The staff API's door (`/graphql`).
pub async fn staff_door(State(state): State<AppState>, request: Request, next: Next) -> Response {
    guard(state, Door::Staff, request, next).await
}

/// The token and revocation endpoints' door.
pub async fn oauth_door(State(state): State<AppState>, request: Request, next: Next) -> Response {
    guard(state, Door::OAuth, request, next).await
}

/// A venue's public endpoint's door (`/v/{slug}/graphql`).
pub async fn public_door(State(state): State<AppState>, request: Request, next: Next) -> Response {
    guard(state, Door::Public, request, next).await
}

/// Public metadata (`/.well-known/oauth-authorization-server`): readable from any origin,
/// as it holds nothing but public URLs.
pub async fn public_metadata(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    response
}

/// The refusal when a credential's client does not list the request's origin.
pub fn not_this_clients_origin(origin: &str) -> String {
    format!("origin {origin} is not one of the allowed origins of the client this token was issued to")
}
