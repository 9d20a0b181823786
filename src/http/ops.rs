//! Operational endpoints: liveness, readiness, Prometheus metrics, security.txt.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

/// `GET /readyz`: the database answers and every migration is applied.
pub async fn readyz(State(state): State<AppState>) -> Response {
    let not_ready = |reason: &str| {
        (StatusCode::SERVICE_UNAVAILABLE, Json(serde_json::json!({ "status": "not ready", "reason": reason })))
            .into_response()
    };
    match state.migrations_current().await {
        Ok(true) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Ok(false) => not_ready("database migrations are not current: run `venueql migrate`"),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            not_ready("database unreachable")
        }
    }
}

/// `GET /metrics`: Prometheus/OpenMetrics text.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let (connections, idle) = state.db.pool_stats();
    let body = state.metrics.render(connections, idle);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], body).into_response()
}

/// `GET /.well-known/security.txt` (RFC 9116).
pub async fn security_txt(State(state): State<AppState>) -> Response {
    let expires = (chrono::Utc::now() + chrono::Duration::days(180)).format("%Y-%m-%dT00:00:00Z");
    let body = format!("Contact: {}\nExpires: {expires}\nPreferred-Languages: en\n", state.config.security_contact);
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}
