//! Refunds at Stripe: `orders` decides and records refunds, and asks through its
//! [`RefundGateway`], which Stripe serves here. One idempotency key per refund row (so no
//! retry can refund twice); the transfer to the venue and the platform's fee are reversed
//! in proportion; the refund's metadata names the row for the webhook.

use std::future::Future;
use std::pin::Pin;

use super::Payments;
use super::stripe::{Params, StripeError, metadata};
use crate::error::AppError;
use crate::orders::refunds_and_disputes::{RefundAnswer, RefundGateway, RefundRequest};

fn refund_params(request: &RefundRequest) -> Params {
    let mut params: Params = vec![
        ("payment_intent".into(), request.payment_intent_id.clone()),
        ("amount".into(), request.amount_minor.to_string()),
        ("reverse_transfer".into(), "true".into()),
        ("refund_application_fee".into(), "true".into()),
    ];
    let tags = [("venue_id", request.venue.to_string()), ("refund_id", request.refund_id.to_string())];
    metadata(&mut params, &tags);
    params
}

/// What Stripe's answer means for the refund: only a definite 4xx (not 409 or 429) is a
/// refusal; no answer, a conflict, throttling or a 5xx after retries may have refunded.
fn answer(outcome: Result<serde_json::Value, StripeError>) -> RefundAnswer {
    match outcome {
        Ok(refund) => {
            let refund = super::objects::read::<super::objects::Refund>("refund", &refund).ok();
            RefundAnswer::Accepted { provider_refund_id: refund.map(|r| r.id) }
        }
        Err(error @ StripeError::Api { status, .. })
            if (400..500).contains(&status) && status != 409 && status != 429 =>
        {
            RefundAnswer::Refused(error.to_string())
        }
        Err(error) => RefundAnswer::Unknown(error.to_string()),
    }
}

impl RefundGateway for Payments {
    fn available(&self) -> Result<(), AppError> {
        self.client().map(|_| ())
    }

    fn request<'a>(&'a self, request: &'a RefundRequest) -> Pin<Box<dyn Future<Output = RefundAnswer> + Send + 'a>> {
        Box::pin(async move {
            let client = match self.client() {
                Ok(client) => client,
                Err(error) => return RefundAnswer::Unknown(error.client_message()),
            };
            let key = format!("venueql-refund-{}", request.refund_id);
            answer(client.post("/v1/refunds", &key, &refund_params(request)).await)
        })
    }
}
