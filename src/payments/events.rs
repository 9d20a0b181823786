//! The Stripe event store: every verified delivery is recorded by event id before anything
//! else, so duplicates are acknowledged without effect and nothing acknowledged is lost.

use serde::Deserialize;

use crate::error::AppError;
use crate::tenancy::Db;

/// Which endpoint an event arrived at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST /webhooks/stripe`: the platform's own events (payments, refunds, disputes).
    Platform,
    /// `POST /webhooks/stripe/connect`: connected accounts' events (`account.updated`).
    Connect,
}

impl Endpoint {
    fn as_str(self) -> &'static str {
        match self {
            Endpoint::Platform => "platform",
            Endpoint::Connect => "connect",
        }
    }
}

/// The envelope fields of a Stripe event (API v1 snapshot events).
#[derive(Debug, Deserialize)]
pub struct EventEnvelope {
    /// `evt_…`
    pub id: String,
    /// Always `event`.
    pub object: String,
    /// e.g. `payment_intent.succeeded`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Unix seconds.
    pub created: i64,
    /// Live or test mode.
    pub livemode: bool,
    /// The API version the event was rendered with.
    pub api_version: Option<String>,
    /// The connected account, for Connect events.
    pub account: Option<String>,
}

/// Parses the envelope of a verified body, refusing anything that is not a Stripe event.
pub fn parse(body: &[u8]) -> Result<EventEnvelope, AppError> {
    let envelope: EventEnvelope = serde_json::from_slice(body)
        .map_err(|e| AppError::bad_input(format!("the body is not a Stripe event object: {e}")))?;
    let id_ok = envelope.id.starts_with("evt_") && envelope.id.len() <= 255;
    if envelope.object != "event" || !id_ok || envelope.event_type.is_empty() {
        return Err(AppError::bad_input("the body is not a Stripe event object (object must be \"event\", id evt_…)"));
    }
    Ok(envelope)
}

/// Records a verified event; `false` when it was recorded before (a duplicate delivery).
pub async fn store(db: &Db, endpoint: Endpoint, event: &EventEnvelope, raw: &str) -> Result<bool, AppError> {
    Ok(sqlx::query_scalar("SELECT private.store_stripe_event($1, $2, $3, $4, $5, $6, $7, $8)")
        .bind(&event.id)
        .bind(endpoint.as_str())
        .bind(&event.event_type)
        .bind(&event.account)
        .bind(event.livemode)
        .bind(&event.api_version)
        .bind(event.created)
        .bind(raw)
        .fetch_one(db.platform_level())
        .await?)
}
