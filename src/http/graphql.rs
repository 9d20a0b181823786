//! The two GraphQL endpoints. The staff endpoint takes the venue from the bearer token
//! (authoritative) and refuses a request that names another venue by host name or the
//! `X-Venue` header; the diner endpoint takes it from the path or host name.

use std::net::IpAddr;

use async_graphql::{BatchRequest, BatchResponse, Executor};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::{Extension, Json};
use secrecy::SecretString;

use super::client_addr::ClientAddr;
use super::cors::CrossOrigin;
use super::{RequestError, RequestId};
use crate::auth;
use crate::error::AppError;
use crate::graphql::context::RequestCtx;
use crate::http::AppState;
use crate::limits::Bucket;
use crate::venues::{self, Venue};

fn bad_request(code: &'static str, message: impl Into<String>) -> RequestError {
    RequestError::new(StatusCode::BAD_REQUEST, code, message)
}

/// Reads the body as a GraphQL request or a bounded batch (JSON array) of them.
fn parse_batch(
    body: Result<Bytes, BytesRejection>,
    max_batch: usize,
    max_bytes: usize,
) -> Result<BatchRequest, RequestError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            let message = format!("request body exceeds the limit of {max_bytes} bytes");
            RequestError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message)
        } else {
            bad_request("BAD_REQUEST", "could not read the request body")
        }
    })?;
    let bad_json = |e: serde_json::Error| {
        bad_request(
            "BAD_REQUEST",
            format!("request body is not a GraphQL request in JSON ({{\"query\": \"...\"}}): {e}"),
        )
    };
    let batch = if body.trim_ascii_start().starts_with(b"[") {
        let requests: Vec<async_graphql::Request> = serde_json::from_slice(&body).map_err(bad_json)?;
        if requests.is_empty() || requests.len() > max_batch {
            let message = format!("a batch must hold 1 to {max_batch} operations; this one holds {}", requests.len());
            return Err(bad_request("BATCH_LIMIT_EXCEEDED", message));
        }
        BatchRequest::Batch(requests)
    } else {
        BatchRequest::Single(serde_json::from_slice(&body).map_err(bad_json)?)
    };
    if batch.iter().any(|request| request.query.trim().is_empty()) {
        return Err(bad_request("BAD_REQUEST", "the request has no query: send {\"query\": \"...\"}"));
    }
    Ok(batch)
}

fn bearer_token(headers: &HeaderMap) -> Option<Result<SecretString, ()>> {
    let value = headers.get(header::AUTHORIZATION)?;
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| SecretString::from(t.trim().to_string()));
    Some(token.ok_or(()))
}

/// The venue slug named by the host name `{slug}.{PUBLIC_HOST_SUFFIX}`, if any.
fn host_slug(headers: &HeaderMap, suffix: Option<&str>) -> Option<String> {
    let suffix = suffix?;
    let host = headers.get(header::HOST)?.to_str().ok()?;
    let host = host.rsplit_once(':').map_or(host, |(name, _port)| name).to_ascii_lowercase();
    let slug = host.strip_suffix(suffix)?.strip_suffix('.')?;
    (!slug.is_empty() && !slug.contains('.')).then(|| slug.to_string())
}

fn unauthenticated(message: &str) -> RequestError {
    RequestError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", message)
}

/// Maps a feature error met before execution (token check, venue lookup) to a refusal.
pub(super) fn refusal(error: AppError) -> RequestError {
    match error {
        AppError::Unauthenticated(message) => unauthenticated(message),
        AppError::Internal(source) => {
            crate::observability::report_internal(source.as_ref());
            RequestError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "internal error")
        }
        other => bad_request(other.code(), other.client_message()),
    }
}

/// The venue the `X-Venue` header names, if any. More than one `X-Venue` header is
/// refused: a request names its venue once, and a second header must never be ignored.
fn x_venue(headers: &HeaderMap) -> Result<Option<String>, RequestError> {
    let mut values = headers.get_all("x-venue").iter();
    let first = values.next().map(|v| v.to_str().unwrap_or("").trim().to_ascii_lowercase());
    if values.next().is_some() {
        return Err(bad_request("BAD_REQUEST", "send at most one X-Venue header"));
    }
    Ok(first)
}

/// Refuses a request that names (by host name or `X-Venue`, slug or id) another venue
/// than the token's. Says nothing about whether the named venue exists.
async fn check_named_venue(state: &AppState, headers: &HeaderMap, staff: &RequestCtx) -> Result<(), RequestError> {
    let named: Vec<String> =
        host_slug(headers, state.config.public_host_suffix.as_deref()).into_iter().chain(x_venue(headers)?).collect();
    if named.is_empty() {
        return Ok(());
    }
    let own = venues::find_by_id(&state.db, staff.venue).await.map_err(refusal)?;
    let own = own.ok_or_else(|| unauthenticated("invalid or revoked token"))?;
    let id = own.id.to_string();
    if named.iter().all(|n| *n == own.slug || *n == id) {
        Ok(())
    } else {
        for other in named.iter().filter(|n| **n != own.slug && **n != id) {
            venues::record_refused_request(&state.db, other, &staff.who(), staff.venue).await;
        }
        let message = "this request names a different venue than the one its token is bound to";
        Err(RequestError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message))
    }
}

/// Runs a staff batch with its request context (the services are the schema's own).
async fn execute_staff(state: &AppState, batch: BatchRequest, request: RequestCtx) -> BatchResponse {
    state.staff_schema.execute_batch(batch.data(request)).await
}

/// Runs a diner batch with its request context.
async fn execute_public(state: &AppState, batch: BatchRequest, request: RequestCtx) -> BatchResponse {
    state.public_schema.execute_batch(batch.data(request)).await
}

/// The diner endpoint's limits: every operation of a batch counts against the address;
/// `startCheckout` (which creates a PaymentIntent at Stripe) is limited per address and
/// per venue, and at most one may run per request, however aliased or batched.
fn limit_public(state: &AppState, batch: &mut BatchRequest, venue: &Venue, client: IpAddr) -> Result<(), RequestError> {
    let address = crate::auth::lockout::counted_address(client).to_string();
    let operations = u32::try_from(batch.iter().count()).unwrap_or(u32::MAX);
    state.limits.check(Bucket::PublicPerAddress, &address, operations).map_err(RequestError::limited)?;
    // Every startCheckout at any depth, in any fragment, in every entry; a document that
    // names the field but cannot be counted is refused, never passed as none.
    let checkouts = crate::graphql::budget::count_field_in_batch(batch, &state.config.limits, "startCheckout")
        .map_err(|error| bad_request("BAD_USER_INPUT", error.message))?;
    match checkouts {
        0 => Ok(()),
        1 => {
            state.limits.check(Bucket::CheckoutPerAddress, &address, 1).map_err(RequestError::limited)?;
            state.limits.check(Bucket::CheckoutPerVenue, &venue.id.to_string(), 1).map_err(RequestError::limited)
        }
        more => Err(bad_request(
            "BAD_USER_INPUT",
            format!("a request may start one checkout; this one starts {more} (aliases and batch entries count)"),
        )),
    }
}

/// A browser request from another origin must carry a token of an OAuth client that
/// lists that origin; a venue API token is a server's credential and never qualifies.
pub async fn check_caller_origin(
    state: &AppState,
    caller: &crate::access::Caller,
    cross_origin: Option<&CrossOrigin>,
) -> Result<(), RequestError> {
    let Some(CrossOrigin(origin)) = cross_origin else { return Ok(()) };
    let allowed = match &caller.client_id {
        Some(client) => auth::clients::client_allows_origin(&state.db, client, origin).await.map_err(refusal)?,
        None => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(RequestError::new(StatusCode::FORBIDDEN, "FORBIDDEN", super::cors::not_this_clients_origin(origin)))
    }
}

/// `POST /graphql`: staff and integrations with a bearer token. Without a token, a
/// request to a venue host name is served the diner schema of that venue (same-origin
/// pages only: a diner page elsewhere calls `/v/{slug}/graphql`).
pub async fn staff(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    cross_origin: Option<Extension<CrossOrigin>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    staff_response(&state, request_id, client, cross_origin.as_deref(), &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn staff_response(
    state: &AppState,
    request_id: String,
    client: IpAddr,
    cross_origin: Option<&CrossOrigin>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RequestError> {
    let token = match bearer_token(headers) {
        Some(Ok(token)) => token,
        Some(Err(())) => {
            return Err(unauthenticated("the Authorization header must be `Bearer <token>`"));
        }
        None => {
            if let Some(slug) = host_slug(headers, state.config.public_host_suffix.as_deref()) {
                if let Some(CrossOrigin(origin)) = cross_origin {
                    let message = format!(
                        "origin {origin} may not call a venue host name's endpoint: call /v/{slug}/graphql, which \
                         answers the origins in the venue's settings"
                    );
                    return Err(RequestError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message));
                }
                return public_response(state, &slug, request_id, client, body).await;
            }
            return Err(unauthenticated("authentication required: send `Authorization: Bearer <token>`"));
        }
    };
    let caller = auth::authenticate_bearer(&state.db, &token, state.config.session_max_age).await.map_err(refusal)?;
    check_caller_origin(state, &caller, cross_origin).await?;
    crate::observability::set_request_venue(&caller.venue.to_string());
    let staff = RequestCtx::staff(caller, request_id, client);
    check_named_venue(state, headers, &staff).await?;
    let batch = parse_batch(body, state.config.limits.max_batch, state.config.max_body_bytes)?;
    let credential = staff.principal().map_err(refusal)?.credential_key();
    let operations = u32::try_from(batch.iter().count()).unwrap_or(u32::MAX);
    state.limits.check(Bucket::StaffPerCredential, &credential, operations).map_err(RequestError::limited)?;
    Ok(Json(execute_staff(state, batch, staff).await).into_response())
}

async fn public_response(
    state: &AppState,
    slug: &str,
    request_id: String,
    client: IpAddr,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RequestError> {
    let venue = venues::find_by_slug(&state.db, slug)
        .await
        .map_err(refusal)?
        .ok_or_else(|| RequestError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "no venue with this slug"))?;
    crate::observability::set_request_venue(&venue.id.to_string());
    let mut batch = parse_batch(body, state.config.limits.max_batch, state.config.max_body_bytes)?;
    limit_public(state, &mut batch, &venue, client)?;
    let request = RequestCtx::diner(venue.venue_id(), request_id, client);
    Ok(Json(execute_public(state, batch, request).await).into_response())
}

/// `POST /v/{slug}/graphql`: the diner's anonymous endpoint for one venue.
/// A bearer token sent along is checked too: a token of another venue than the path's
/// is refused (the request names two venues).
pub async fn public(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let checked = async {
        if x_venue(&headers)?.is_some() {
            let message = "this endpoint's venue is the one in its path (/v/{slug}/graphql); do not send X-Venue";
            return Err(bad_request("BAD_REQUEST", message));
        }
        if let Some(token) = bearer_token(&headers) {
            let token = token.map_err(|()| unauthenticated("the Authorization header must be `Bearer <token>`"))?;
            let caller =
                auth::authenticate_bearer(&state.db, &token, state.config.session_max_age).await.map_err(refusal)?;
            let own = venues::find_by_id(&state.db, caller.venue).await.map_err(refusal)?;
            if own.is_none_or(|venue| venue.slug != slug) {
                let who = crate::audit::Who {
                    actor: caller.principal.actor(),
                    request_id: Some(request_id.clone()),
                    ip: Some(client),
                };
                venues::record_refused_request(&state.db, &slug, &who, caller.venue).await;
                let message = "this request names a different venue than the one its token is bound to";
                return Err(RequestError::new(StatusCode::FORBIDDEN, "FORBIDDEN", message));
            }
        }
        public_response(&state, &slug, request_id, client, body).await
    };
    checked.await.unwrap_or_else(IntoResponse::into_response)
}

/// `GET /graphql`: GraphiQL when enabled (`venueql dev`), otherwise a clear refusal.
pub async fn graphiql(State(state): State<AppState>) -> Response {
    if !state.config.graphiql {
        let refusal =
            RequestError::new(StatusCode::METHOD_NOT_ALLOWED, "BAD_REQUEST", "send GraphQL requests with POST");
        return refusal.into_response();
    }
    Html(GRAPHIQL_PAGE).into_response()
}

const GRAPHIQL_PAGE: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>venueql GraphiQL (dev)</title>
<link rel="stylesheet" href="https://unpkg.com/graphiql@3/graphiql.min.css"></head>
<body style="margin:0"><div id="graphiql" style="height:100vh"></div>
<script src="https://unpkg.com/react@18/umd/react.production.min.js"></script>
<script src="https://unpkg.com/react-dom@18/umd/react-dom.production.min.js"></script>
<script src="https://unpkg.com/graphiql@3/graphiql.min.js"></script>
<script>
const fetcher = GraphiQL.createFetcher({ url: '/graphql' });
ReactDOM.createRoot(document.getElementById('graphiql')).render(
  React.createElement(GraphiQL, { fetcher, defaultHeaders: '{"Authorization": "Bearer <token from .venueql/dev.json>"}' }));
</script></body></html>"#;
