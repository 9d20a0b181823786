//! `GET /graphql/ws`: subscriptions over graphql-transport-ws (the legacy graphql-ws
//! protocol is accepted too). The bearer token goes in `connection_init`'s payload, as
//! `{"Authorization": "Bearer <token>"}` or `{"token": "<token>"}`; without a valid one the
//! connection is closed before any subscription starts.
//!
//! Sockets are bounded: `connection_init` must come within `WS_INIT_TIMEOUT_SECS` (else
//! close 4408), a socket silent for `WS_IDLE_TIMEOUT_SECS` is closed (clients ping), one
//! credential and one venue hold at most `WS_MAX_CONNECTIONS_PER_TOKEN` /
//! `WS_MAX_CONNECTIONS_PER_VENUE` sockets across the deployment (each process its share),
//! one socket runs at most `WS_MAX_SUBSCRIPTIONS` subscriptions, and a shutting-down
//! server closes every socket with 1001 (going away).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_graphql::http::ALL_WEBSOCKET_PROTOCOLS;
use async_graphql::{Data, Executor, Request, Response};
use async_graphql_axum::{GraphQLProtocol, GraphQLWebSocket};
use axum::Extension;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response as HttpResponse};
use futures_util::stream::BoxStream;
use futures_util::{SinkExt, StreamExt};
use secrecy::SecretString;

use super::RequestId;
use super::client_addr::ClientAddr;
use crate::auth;
use crate::graphql::context::RequestCtx;
use crate::graphql::error::coded;
use crate::http::AppState;
use crate::orders::graphql::ConnectionToken;

/// Open sockets per credential and per venue in this process.
#[derive(Default)]
pub struct OpenSockets {
    counts: Mutex<HashMap<String, u32>>,
}

/// One counted socket; uncounted when dropped (the socket closed).
struct SocketSlot {
    sockets: Arc<OpenSockets>,
    keys: Vec<String>,
}

impl Drop for SocketSlot {
    fn drop(&mut self) {
        let mut counts = self.sockets.counts.lock().expect("socket counts");
        for key in &self.keys {
            if let Some(n) = counts.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

impl OpenSockets {
    /// Counts a socket against every `(key, cap)`, or refuses naming the cap it would pass.
    fn open(self: &Arc<Self>, caps: &[(String, u32, &'static str)]) -> Result<SocketSlot, String> {
        let mut counts = self.counts.lock().expect("socket counts");
        if let Some((_, cap, what)) = caps.iter().find(|(key, cap, _)| counts.get(key).copied().unwrap_or(0) >= *cap) {
            return Err(format!("too many open subscription connections for this {what} (at most {cap} here)"));
        }
        for (key, _, _) in caps {
            *counts.entry(key.clone()).or_default() += 1;
        }
        Ok(SocketSlot { sockets: self.clone(), keys: caps.iter().map(|(key, _, _)| key.clone()).collect() })
    }
}

/// The schema with a cap on the subscriptions one socket runs at once.
#[derive(Clone)]
struct CappedSubscriptions<E> {
    inner: E,
    active: Arc<AtomicUsize>,
    max: usize,
}

/// Releases a subscription's place when its stream ends (complete, stop or disconnect).
struct Running(Arc<AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<E: Executor> Executor for CappedSubscriptions<E> {
    async fn execute(&self, request: Request) -> Response {
        self.inner.execute(request).await
    }

    fn execute_stream(&self, request: Request, session: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        if self.active.fetch_add(1, Ordering::SeqCst) >= self.max {
            self.active.fetch_sub(1, Ordering::SeqCst);
            let message = format!("this connection already runs {} subscriptions; stop one first", self.max);
            let mut error = async_graphql::ServerError::new(message, None);
            let mut extensions = async_graphql::ErrorExtensionValues::default();
            extensions.set("code", "RATE_LIMITED");
            error.extensions = Some(extensions);
            return futures_util::stream::once(async move { Response::from_errors(vec![error]) }).boxed();
        }
        let running = Running(self.active.clone());
        self.inner
            .execute_stream(request, session)
            .map(move |response| {
                let _held = &running;
                response
            })
            .boxed()
    }
}

/// Why the server ended a socket.
const ENDED_BY_CLIENT: u8 = 0;
const INIT_TIMEOUT: u8 = 1;
const SHUTDOWN: u8 = 2;

/// `GET /graphql/ws`. A browser on another origin is let in only from an origin some SPA
/// client lists, and its token must then be of a client that lists it (as for `/graphql`).
pub async fn websocket(
    State(state): State<AppState>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(ClientAddr(client)): Extension<ClientAddr>,
    headers: axum::http::HeaderMap,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> HttpResponse {
    let origin = super::cors::foreign_origin(&headers, &state.issuer);
    if let Some(origin) = &origin {
        match auth::clients::origin_registered(&state.db, origin).await {
            Ok(true) => {}
            Ok(false) => {
                let message = format!("origin {origin} may not open subscriptions: register it on your SPA client");
                return super::error_response(axum::http::StatusCode::FORBIDDEN, "FORBIDDEN", &message);
            }
            Err(error) => return super::graphql::refusal(error).into_response(),
        }
    }
    let origin = origin.map(super::cors::CrossOrigin);
    upgrade
        .protocols(ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |socket| serve(state, socket, protocol, Opened { request_id, client, origin }))
        .into_response()
}

/// Where a socket came from.
struct Opened {
    request_id: String,
    client: IpAddr,
    origin: Option<super::cors::CrossOrigin>,
}

async fn serve(state: AppState, socket: WebSocket, protocol: GraphQLProtocol, opened: Opened) {
    let limits = state.config.rate_limits.clone();
    let (mut sink, stream) = socket.split();
    let initialised = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicU8::new(ENDED_BY_CLIENT));
    let stop = {
        let (initialised, ended, mut shutdown) = (initialised.clone(), ended.clone(), state.shutdown.clone());
        async move {
            let init_timeout = async {
                tokio::time::sleep(limits.ws_init_timeout).await;
                if initialised.load(Ordering::SeqCst) {
                    std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                () = init_timeout => ended.store(INIT_TIMEOUT, Ordering::SeqCst),
                _ = shutdown.wait_for(|stopping| *stopping) => ended.store(SHUTDOWN, Ordering::SeqCst),
            }
        }
    };
    let schema = CappedSubscriptions {
        inner: state.staff_schema.clone(),
        active: Arc::new(AtomicUsize::new(0)),
        max: limits.ws_max_subscriptions as usize,
    };
    let on_init = {
        let state = state.clone();
        let initialised = initialised.clone();
        move |payload| async move {
            let data = connection_data(state, payload, opened).await?;
            initialised.store(true, Ordering::SeqCst);
            Ok(data)
        }
    };
    GraphQLWebSocket::new_with_pair(&mut sink, stream.take_until(stop), schema, protocol)
        .on_connection_init(on_init)
        .keepalive_timeout(limits.ws_idle_timeout)
        .serve()
        .await;
    let close = match ended.load(Ordering::SeqCst) {
        INIT_TIMEOUT => Some((4408, "Connection initialisation timeout")),
        SHUTDOWN => Some((axum::extract::ws::close_code::AWAY, "the server is shutting down; reconnect")),
        _ => None,
    };
    if let Some((code, reason)) = close {
        let _ = sink.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
    }
}

fn token_in(payload: &serde_json::Value) -> Option<&str> {
    let header = ["Authorization", "authorization"].iter().find_map(|name| payload.get(*name)?.as_str());
    header
        .and_then(|value| value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")))
        .or_else(|| payload.get("token")?.as_str())
}

async fn connection_data(state: AppState, payload: serde_json::Value, opened: Opened) -> async_graphql::Result<Data> {
    let Opened { request_id, client, origin } = opened;
    let token = token_in(&payload).ok_or_else(|| {
        coded("UNAUTHENTICATED", "send the token in connection_init: {\"Authorization\": \"Bearer <token>\"}")
    })?;
    let token = SecretString::from(token.trim().to_string());
    let caller = auth::authenticate_bearer(&state.db, &token, state.config.session_max_age).await?;
    super::graphql::check_caller_origin(&state, &caller, origin.as_ref())
        .await
        .map_err(|refused| coded(refused.code, refused.message))?;
    let caps = [
        (
            caller.principal.credential_key(),
            state.limits.share_of(state.config.rate_limits.ws_per_credential),
            "credential",
        ),
        (format!("venue:{}", caller.venue), state.limits.share_of(state.config.rate_limits.ws_per_venue), "venue"),
    ];
    let slot = state.open_sockets.open(&caps).map_err(|message| coded("RATE_LIMITED", message))?;
    let staff = RequestCtx::staff(caller, request_id, client);
    let mut data = Data::default();
    data.insert(staff);
    data.insert(ConnectionToken { token, session_max_age: state.config.session_max_age });
    data.insert(Arc::new(slot));
    Ok(data)
}
