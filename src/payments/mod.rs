//! Stripe payments: the API client and its typed objects, Connect Express onboarding
//! (`stripe_accounts`), checkouts (`checkouts`, `checkout_items`), the verified webhook
//! event store and the translation of each event into this room's state and into calls of
//! `orders`, refunds at Stripe (orders' [`crate::orders::refunds_and_disputes::RefundGateway`]),
//! reconciliation and replay. Payments depends on orders, never the reverse: an order is
//! placed by `orders::place`, called from [`effects`] for a verified
//! `payment_intent.succeeded`.

pub mod accounts;
pub mod checkout;
pub mod effects;
pub mod events;
pub mod graphql;
pub mod intake;
pub mod jobs;
pub mod local_stripe;
pub mod objects;
pub mod refunds;
pub mod signature;
pub mod stripe;

use std::time::Duration;

use crate::config::StripeConfig;
use crate::error::AppError;
use stripe::{RetryPolicy, StripeClient};

/// The payment settings and Stripe client every payment operation needs.
#[derive(Clone, Debug)]
pub struct Payments {
    client: Option<StripeClient>,
    /// Application fee in basis points.
    pub platform_fee_bps: u32,
    /// Lifetime of an unpaid checkout.
    pub checkout_expiry: Duration,
    /// Delay after which a paid checkout without an order is reported.
    pub reconcile_after: Duration,
    /// Whether the secret key is a live-mode key (`sk_live_`/`rk_live_`), a test-mode
    /// one, or unknown (no key): every event's `livemode` must match it.
    pub livemode: Option<bool>,
}

impl Payments {
    /// Builds the client from the Stripe settings (none without `STRIPE_SECRET_KEY`).
    pub fn from_config(config: &StripeConfig) -> Payments {
        let retry = RetryPolicy { first_backoff: config.retry_backoff, ..RetryPolicy::default() };
        Payments {
            client: config.secret_key.clone().map(|key| StripeClient::new(&config.api_base, key, retry)),
            platform_fee_bps: config.platform_fee_bps,
            checkout_expiry: config.checkout_expiry,
            reconcile_after: config.reconcile_after,
            livemode: config.secret_key.as_ref().map(|key| key_is_live(secrecy::ExposeSecret::expose_secret(key))),
        }
    }

    /// The Stripe client, or UNAVAILABLE when no secret key is configured.
    pub fn client(&self) -> Result<&StripeClient, AppError> {
        self.client.as_ref().ok_or_else(|| {
            AppError::Unavailable("payments are not configured on this server (STRIPE_SECRET_KEY is not set)".into())
        })
    }

    /// Why an event must not take effect here: its `livemode` differs from the key's.
    pub fn mode_mismatch(&self, event_livemode: bool) -> Option<String> {
        let live = self.livemode?;
        (live != event_livemode).then(|| {
            let (event, key) = if event_livemode { ("live", "test") } else { ("test", "live") };
            format!("ignored: a {event}-mode event while this server uses a {key}-mode key")
        })
    }

    /// The platform's fee on `amount_minor`, rounded half up, in the same minor units.
    pub fn application_fee(&self, amount_minor: i64) -> i64 {
        (amount_minor * i64::from(self.platform_fee_bps) + 5_000) / 10_000
    }
}

/// Whether a Stripe secret or restricted key is a live-mode one.
fn key_is_live(key: &str) -> bool {
    key.starts_with("sk_live_") || key.starts_with("rk_live_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_must_be_in_the_keys_mode() {
        let test = Payments { livemode: Some(false), ..Payments::from_config(&StripeConfig::default()) };
        assert!(test.mode_mismatch(false).is_none());
        assert!(test.mode_mismatch(true).unwrap().contains("live-mode event"));
        let live = Payments { livemode: Some(true), ..test.clone() };
        assert!(live.mode_mismatch(false).unwrap().contains("test-mode event"));
        assert!(key_is_live("sk_live_abc") && key_is_live("rk_live_abc") && !key_is_live("sk_test_abc"));
    }
}
