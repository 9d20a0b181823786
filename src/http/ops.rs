//! Operational endpoints: liveness, readiness, Prometheus metrics, security.txt.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use secrecy::ExposeSecret;

use crate::auth::secrets;
use axum::response::{IntoResponse, Response};

use crate::http::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// How long `/readyz` waits for the database.
const READY_WITHIN: std::time::Duration = std::time::Duration::from_secs(2);

/// `GET /readyz`: the database answers and every migration is applied.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: &str| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "not ready", "reason": reason })))
            .into_response()
    };
    // A load balancer asks often and must get an answer fast, even while every connection
    // of the pool is waiting on a database that is gone.
    match tokio::time::timeout(READY_WITHIN, state.migrations_current()).await {
        Ok(Ok(true)) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(Ok(false)) => not_ready("database migrations are not current: run `venueql migrate`"),
        Ok(Err(error)) => {
            tracing::warn!(error = %error, "readiness check failed");
            not_ready("database unreachable")
        }
        Err(_) => not_ready("the database did not answer within 2 seconds"),
    }
}

/// `GET /metrics` on the main listener: only with `Authorization: Bearer <METRICS_TOKEN>`
/// (metrics name routes, venues' traffic and pool sizes: not for the public).
pub async fn metrics(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let Some(token) = &state.config.metrics_token else {
        let message =
            "metrics are not served on this listener: set METRICS_TOKEN, or METRICS_LISTEN_ADDR for a separate one";
        return crate::http::error_response(StatusCode::NOT_FOUND, "NOT_FOUND", message);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = secrets::hash(token.expose_secret());
    if presented.is_empty() || secrets::hash(presented) != expected {
        let mut refusal = crate::http::error_response(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "send Authorization: Bearer <METRICS_TOKEN>",
        );
        refusal.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"metrics\""));
        return refusal;
    }
    render_metrics(&state)
}

/// `GET /metrics` on `METRICS_LISTEN_ADDR`: the separate listener is the access control.
pub async fn metrics_listener(State(state): State<AppState>) -> Response {
    render_metrics(&state)
}

fn render_metrics(state: &AppState) -> Response {
    let (connections, idle) = state.db.pool_stats();
    let body = state.metrics.render(connections, idle);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// `GET /.well-known/security.txt` (RFC 9116): `Contact:` from `SECURITY_CONTACT`;
/// `Expires:` 180 days ahead, computed per request so a running server never serves an
/// expired file; `Policy:` the disclosure terms (acknowledgement within 48 hours, credit,
/// safe harbour), `SECURITY_POLICY_URL` or this server's own copy of them.
pub async fn security_txt(State(state): State<AppState>) -> Response {
    let expires = (chrono::Utc::now() + chrono::Duration::days(180)).format("%Y-%m-%dT00:00:00Z");
    let policy = state
        .config
        .security_policy_url
        .clone()
        .unwrap_or_else(|| format!("{}/.well-known/security-policy", state.issuer));
    let body = format!(
        "Contact: {}\nExpires: {expires}\nPolicy: {policy}\nPreferred-Languages: en\n",
        state.config.security_contact
    );
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

/// docs/SECURITY.md, built into the binary: its disclosure terms are served as they are
/// written there, never from a second copy.
const SECURITY_DOSSIER: &str = include_str!("../../docs/SECURITY.md");

/// The "Reporting a vulnerability" section of docs/SECURITY.md.
pub fn disclosure_policy() -> &'static str {
    let start = SECURITY_DOSSIER.find("## Reporting a vulnerability").unwrap_or(0);
    let rest = &SECURITY_DOSSIER[start..];
    let end = rest[3..].find("\n## ").map_or(rest.len(), |i| i + 4);
    &rest[..end]
}

/// `GET /.well-known/security-policy`: the disclosure terms security.txt's `Policy:` names.
pub async fn security_policy() -> Response {
    ([(header::CONTENT_TYPE, "text/markdown; charset=utf-8")], disclosure_policy()).into_response()
}
