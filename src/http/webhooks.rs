//! Stripe webhook endpoints: verify the signature on the raw body, store the event by id
//! (a duplicate is acknowledged without effect), answer 2xx only after the commit. Any
//! failure before that is non-2xx, so Stripe retries.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::RequestError;
use crate::error::AppError;
use crate::http::AppState;
use crate::payments::events::{self, Endpoint};
use crate::payments::intake::{self, Ingested};
use crate::payments::signature;

/// How long a delivery waits for a processing slot before it is answered 503.
const PERMIT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

async fn receive(
    state: &AppState,
    endpoint: Endpoint,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, RequestError> {
    let secrets = match endpoint {
        Endpoint::Platform => &state.config.stripe.webhook_secrets,
        Endpoint::Connect => &state.config.stripe.connect_webhook_secrets,
    };
    if secrets.is_empty() {
        tracing::error!(endpoint = ?endpoint, "Stripe webhook received but no signing secret is configured");
        return Err(RequestError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NOT_CONFIGURED",
            "this webhook endpoint is not configured",
        ));
    }
    // Deliveries are exempt from the public rate limits (Stripe's retries must get
    // through) but bounded in how many are processed at once.
    let Ok(Ok(_permit)) = tokio::time::timeout(PERMIT_WAIT, state.webhook_permits.acquire()).await else {
        let mut refusal =
            RequestError::new(StatusCode::SERVICE_UNAVAILABLE, "BUSY", "too many deliveries at once; retry")
                .into_response();
        refusal.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(5));
        return Ok(refusal);
    };
    let header = headers.get("stripe-signature").and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp();
    let secret_refs: Vec<&secrecy::SecretString> = secrets.iter().collect();
    if let Err(error) = signature::verify(body, header, &secret_refs, state.config.stripe.tolerance_secs, now) {
        tracing::warn!(endpoint = ?endpoint, reason = %error, "Stripe webhook signature refused");
        if let Some(count) = state.signature_failures.hit() {
            let summary = format!("{count} refused Stripe webhook signatures within a minute ({endpoint:?} endpoint)");
            let kind = crate::audit::alerts::AlertKind::SignatureFailureBurst;
            if let Err(error) = crate::audit::alerts::raise(&state.db, kind, None, &summary).await {
                tracing::error!(error = %error.client_message(), "could not raise the signature-failure alert");
            }
        }
        return Err(RequestError::new(StatusCode::BAD_REQUEST, "SIGNATURE_INVALID", error.to_string()));
    }
    let event = events::parse(body)
        .map_err(|e| RequestError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.client_message()))?;
    let raw = std::str::from_utf8(body)
        .map_err(|_| RequestError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", "the body is not UTF-8"))?;
    let hub = Some(&state.orders_hub);
    let ingested = intake::ingest(&state.db, &state.payments, hub, endpoint, &event, raw).await.map_err(|error| {
        match &error {
            AppError::Internal(source) => crate::observability::report_internal(source.as_ref()),
            // The database is down: Stripe retries, nothing to report but the warning.
            AppError::Unavailable(message) => {
                return RequestError::new(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", message.clone());
            }
            // Not acknowledged: Stripe retries, the operator has the alert.
            AppError::Unreadable(message) => {
                return RequestError::new(StatusCode::INTERNAL_SERVER_ERROR, "EVENT_UNREADABLE", message.clone());
            }
            _ => {}
        }
        RequestError::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "the event could not be processed; retry")
    })?;
    let body = match &ingested {
        Ingested::Applied { outcome, .. } => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, outcome, "Stripe event applied");
            // Stripe's Dashboard shows this body next to the delivery: say what happened.
            serde_json::json!({ "received": true, "duplicate": false, "outcome": outcome })
        }
        Ingested::Duplicate => {
            tracing::info!(event_id = %event.id, event_type = %event.event_type, "Stripe event already received");
            serde_json::json!({ "received": true, "duplicate": true })
        }
    };
    Ok(axum::Json(body).into_response())
}

/// `POST /webhooks/stripe`.
pub async fn platform(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, Endpoint::Platform, &headers, &body).await.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /webhooks/stripe/connect`.
pub async fn connect(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    receive(&state, Endpoint::Connect, &headers, &body).await.unwrap_or_else(IntoResponse::into_response)
}
