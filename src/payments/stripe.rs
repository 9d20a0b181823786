//! The Stripe API client: plain HTTP with form-encoded bodies, as Stripe expects. The API
//! version is pinned to the one `stripe/api-subset.json` describes, every POST carries an
//! idempotency key derived from what it is for (a retry reuses it), network errors, 429
//! and 5xx are retried with backoff, and Stripe's error bodies become clear errors. The
//! secret key is sent only in the `Authorization` header and never logged.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;

use crate::error::AppError;

/// The API version every request pins (and every event is expected in).
pub const API_VERSION: &str = "2023-08-16";

/// How a Stripe call failed.
#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered with an error object.
    #[error("Stripe refused the request ({status}, {kind}{}): {message}", code.as_deref().map(|c| format!(", {c}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: u16,
        /// `error.type`, e.g. `invalid_request_error`.
        kind: String,
        /// `error.code`, e.g. `payment_intent_unexpected_state`.
        code: Option<String>,
        /// `error.message`.
        message: String,
    },
    /// Stripe could not be reached, or kept failing, after every retry.
    #[error("Stripe is unavailable after {attempts} attempts: {detail}")]
    Unavailable {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        detail: String,
    },
    /// Stripe answered with something that is not a Stripe object.
    #[error("unexpected answer from Stripe: {0}")]
    Malformed(String),
}

impl StripeError {
    /// Stripe's `error.code`, when it gave one.
    pub fn code(&self) -> Option<&str> {
        match self {
            StripeError::Api { code, .. } => code.as_deref(),
            _ => None,
        }
    }
}

impl From<StripeError> for AppError {
    fn from(error: StripeError) -> AppError {
        match error {
            StripeError::Unavailable { .. } => {
                tracing::warn!(error = %error, "Stripe unavailable");
                AppError::Unavailable("the payment provider is unavailable; try again shortly".into())
            }
            other => AppError::internal(other),
        }
    }
}

/// Retry policy: attempts and the first backoff (doubled each time).
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Total attempts, including the first.
    pub attempts: u32,
    /// Wait before the second attempt.
    pub first_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy { attempts: 4, first_backoff: Duration::from_millis(250) }
    }
}

/// A configured Stripe API client (cheap to clone).
#[derive(Clone)]
pub struct StripeClient {
    http: reqwest::Client,
    base: String,
    secret_key: SecretString,
    retry: RetryPolicy,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient").field("base", &self.base).finish_non_exhaustive()
    }
}

/// Form parameters in Stripe's bracket notation, e.g. `("metadata[venue_id]", "…")`.
pub type Params = Vec<(String, String)>;

impl StripeClient {
    /// A client for `base` (`STRIPE_API_BASE`) with the secret key (`STRIPE_SECRET_KEY`).
    pub fn new(base: &str, secret_key: SecretString, retry: RetryPolicy) -> StripeClient {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("venueql/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a plain reqwest client builds");
        StripeClient { http, base: base.trim_end_matches('/').to_string(), secret_key, retry }
    }

    /// `POST {path}` with form parameters and the idempotency key for what it is for.
    pub async fn post(&self, path: &str, idempotency_key: &str, params: &Params) -> Result<Value, StripeError> {
        let body = serde_urlencoded::to_string(params).map_err(|e| StripeError::Malformed(e.to_string()))?;
        self.send(reqwest::Method::POST, path, Some((idempotency_key, body))).await
    }

    /// `GET {path}`.
    pub async fn get(&self, path: &str) -> Result<Value, StripeError> {
        self.send(reqwest::Method::GET, path, None).await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        form: Option<(&str, String)>,
    ) -> Result<Value, StripeError> {
        let url = format!("{}{path}", self.base);
        let mut backoff = self.retry.first_backoff;
        let mut last_failure = String::new();
        for attempt in 1..=self.retry.attempts {
            if attempt > 1 {
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
            let mut request = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(self.secret_key.expose_secret())
                .header("Stripe-Version", API_VERSION);
            if let Some((key, body)) = &form {
                request = request
                    .header("Idempotency-Key", *key)
                    .header("Content-Type", "application/x-www-form-urlencoded")
                    .body(body.clone());
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(error) => {
                    last_failure = format!("network error: {}", without_url(&error));
                    tracing::warn!(%method, path, attempt, reason = %last_failure, "Stripe request failed; retrying");
                    continue;
                }
            };
            let status = response.status().as_u16();
            let should_retry = response.headers().get("stripe-should-retry").and_then(|v| v.to_str().ok());
            let retryable = match should_retry {
                Some("true") => true,
                Some("false") => false,
                _ => status == 429 || status >= 500,
            };
            let text = response.text().await.unwrap_or_default();
            if (200..300).contains(&status) {
                return serde_json::from_str(&text).map_err(|e| StripeError::Malformed(e.to_string()));
            }
            let error = api_error(status, &text);
            if retryable && attempt < self.retry.attempts {
                tracing::warn!(%method, path, attempt, status, "Stripe answered with a retryable error; retrying");
                last_failure = error.to_string();
                continue;
            }
            if retryable {
                return Err(StripeError::Unavailable { attempts: attempt, detail: error.to_string() });
            }
            return Err(error);
        }
        Err(StripeError::Unavailable { attempts: self.retry.attempts, detail: last_failure })
    }
}

/// A reqwest error's text without the URL (which is safe, but noisy in logs).
fn without_url(error: &reqwest::Error) -> String {
    let mut message = error.to_string();
    if let Some(url) = error.url() {
        message = message.replace(url.as_str(), "<stripe>");
    }
    message
}

fn api_error(status: u16, body: &str) -> StripeError {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let field = |name: &str| error.and_then(|e| e[name].as_str()).map(str::to_string);
    StripeError::Api {
        status,
        kind: field("type").unwrap_or_else(|| "unknown".into()),
        code: field("code"),
        message: field("message").unwrap_or_else(|| format!("HTTP {status} without a Stripe error body")),
    }
}

/// Appends `metadata[key]=value` pairs.
pub fn metadata(params: &mut Params, pairs: &[(&str, String)]) {
    for (key, value) in pairs {
        params.push((format!("metadata[{key}]"), value.clone()));
    }
}
