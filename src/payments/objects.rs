//! The Stripe objects venueql reads, typed: only the fields it uses, each as Stripe's
//! OpenAPI spec declares it (nullable fields and fields the spec does not require are
//! `Option`s or default; statuses are enums). The tests below hold every struct and enum
//! against the outline of Stripe's spec kept in `stripe/api-subset.json`
//! (`scripts/trim-stripe-spec.py` writes it), and read each object made of only the
//! fields the spec requires.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::orders::refunds_and_disputes::DisputeStatus;

/// Key-value metadata venueql attaches to what it creates (`venue_id`, `checkout_id`,
/// `refund_id`).
pub type Metadata = HashMap<String, String>;

/// The status of a PaymentIntent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentIntentStatus {
    /// Paid.
    Succeeded,
    /// Being processed (e.g. a bank debit).
    Processing,
    /// Waiting for a payment method (again, after a failed attempt).
    #[default]
    RequiresPaymentMethod,
    /// Waiting for confirmation.
    RequiresConfirmation,
    /// Waiting for the customer (3-D Secure).
    RequiresAction,
    /// Authorised, not captured.
    RequiresCapture,
    /// Cancelled.
    Canceled,
    /// A status this version of venueql does not know.
    #[serde(other)]
    Other,
}

/// The status of a refund.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Made, not yet settled.
    #[default]
    Pending,
    /// The customer must act.
    RequiresAction,
    /// Done.
    Succeeded,
    /// Failed after all.
    Failed,
    /// Cancelled.
    Canceled,
    /// A status this version of venueql does not know.
    #[serde(other)]
    Other,
}

impl RefundStatus {
    /// The name venueql stores (Stripe's).
    pub fn as_str(self) -> Option<&'static str> {
        Some(match self {
            RefundStatus::Pending => "pending",
            RefundStatus::RequiresAction => "requires_action",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Canceled => "canceled",
            RefundStatus::Other => return None,
        })
    }
}

/// The status of a dispute as Stripe sends it: one of the statuses orders keep, or one
/// this version of venueql does not know.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DisputeStatusOnWire {
    /// A status venueql keeps.
    Known(DisputeStatus),
    /// A status Stripe added since.
    Other(String),
}

impl Default for DisputeStatusOnWire {
    fn default() -> Self {
        DisputeStatusOnWire::Known(DisputeStatus::default())
    }
}

/// Where a destination charge's funds go.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TransferData {
    /// The connected account.
    pub destination: String,
}

/// A payment error.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PaymentError {
    /// What went wrong, for people.
    pub message: Option<String>,
}

/// A PaymentIntent (the payment of one checkout).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PaymentIntent {
    /// `pi_…`
    pub id: String,
    /// Amount asked, minor units.
    pub amount: i64,
    /// Amount received, minor units (not required by Stripe's spec).
    pub amount_received: Option<i64>,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Where it stands.
    pub status: PaymentIntentStatus,
    /// What venueql attached (`venue_id`, `checkout_id`); not required by Stripe's spec.
    #[serde(default)]
    pub metadata: Metadata,
    /// The destination of a destination charge.
    pub transfer_data: Option<TransferData>,
    /// The platform's fee, minor units (null when none).
    pub application_fee_amount: Option<i64>,
    /// The charge that paid it.
    pub latest_charge: Option<String>,
    /// Why the last attempt failed.
    pub last_payment_error: Option<PaymentError>,
    /// Why it was cancelled.
    pub cancellation_reason: Option<String>,
    /// What Stripe.js confirms the payment with (only on creation).
    pub client_secret: Option<String>,
}

/// A list of refunds embedded in a charge.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RefundList {
    /// The refunds (the first page).
    pub data: Vec<Refund>,
}

/// A charge (its refunds).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Charge {
    /// `ch_…`
    pub id: String,
    /// The PaymentIntent it belongs to.
    pub payment_intent: Option<String>,
    /// Everything refunded so far, minor units (only grows).
    pub amount_refunded: i64,
    /// Its refunds.
    pub refunds: Option<RefundList>,
}

/// A refund.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Refund {
    /// `re_…`
    pub id: String,
    /// Minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// Where it stands (null only in rare intermediate states).
    pub status: Option<RefundStatus>,
    /// Stripe's reason code.
    pub reason: Option<String>,
    /// What venueql attached (`refund_id` of its own row).
    pub metadata: Option<Metadata>,
    /// The PaymentIntent refunded.
    pub payment_intent: Option<String>,
}

/// A dispute (chargeback or inquiry).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Dispute {
    /// `dp_…`
    pub id: String,
    /// Disputed amount, minor units.
    pub amount: i64,
    /// Lower-case ISO 4217.
    pub currency: String,
    /// The cardholder's reason.
    pub reason: String,
    /// Where it stands.
    pub status: DisputeStatusOnWire,
    /// The PaymentIntent disputed.
    pub payment_intent: Option<String>,
}

/// What a connected account still has to provide.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccountRequirements {
    /// Fields due now.
    pub currently_due: Option<Vec<String>>,
    /// Why the account cannot take charges, if it cannot.
    pub disabled_reason: Option<String>,
}

/// A connected account (Connect Express).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Account {
    /// `acct_…`
    pub id: String,
    /// Unix seconds (Stripe's spec requires only `id` and `object` of an account: every
    /// other field may be absent, and absent means "not said", never false).
    pub created: Option<i64>,
    /// May take charges.
    pub charges_enabled: Option<bool>,
    /// May receive payouts.
    pub payouts_enabled: Option<bool>,
    /// Onboarding submitted.
    pub details_submitted: Option<bool>,
    /// What is still due.
    pub requirements: Option<AccountRequirements>,
}

/// A one-time onboarding link.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccountLink {
    /// Where to send the venue's owner.
    pub url: String,
}

/// Reads a Stripe object out of JSON, naming what did not fit.
pub fn read<T: serde::de::DeserializeOwned>(what: &str, value: &serde_json::Value) -> Result<T, String> {
    T::deserialize(value).map_err(|e| format!("Stripe's {what} does not have the expected shape: {e}"))
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn spec() -> Value {
        serde_json::from_str(include_str!("../../stripe/api-subset.json")).expect("the spec outline is JSON")
    }

    fn json_type(value: &Value) -> &'static str {
        match value {
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
            Value::Null => "null",
        }
    }

    /// Every field of `ours` (a default instance, serialised) against the spec's outline of
    /// `object`: it exists, has that type, and is an `Option` wherever Stripe may send null.
    fn check(spec: &Value, object: &str, ours: &Value, problems: &mut Vec<String>) {
        let outline = &spec["objects"][object];
        assert!(outline.is_object(), "the spec outline has no {object}");
        check_properties(spec, object, outline, ours, problems);
    }

    fn check_properties(spec: &Value, at: &str, outline: &Value, ours: &Value, problems: &mut Vec<String>) {
        for (field, value) in ours.as_object().expect("a struct serialises to an object") {
            let path = format!("{at}.{field}");
            let Some(declared) = outline.get(field) else {
                problems.push(format!("{path}: not in Stripe's spec"));
                continue;
            };
            if value.is_null() {
                continue; // an Option: whatever Stripe sends, null included, fits
            }
            if declared["nullable"] == true {
                problems.push(format!("{path}: Stripe may send null, so it must be an Option"));
            }
            if let Some(object) = declared["object"].as_str().filter(|_| value.is_object()) {
                check(spec, object, value, problems);
            } else if let Some(properties) = declared.get("properties") {
                check_properties(spec, &path, properties, value, problems);
            } else if declared["type"].as_str() != Some(json_type(value)) {
                problems.push(format!(
                    "{path}: Stripe declares {}, venueql reads {}",
                    declared["type"],
                    json_type(value)
                ));
            }
        }
    }

    /// Every variant of a status enum (but the catch-all) is one Stripe names.
    fn check_statuses<T: Serialize>(
        spec: &Value,
        object: &str,
        field: &str,
        variants: &[T],
        problems: &mut Vec<String>,
    ) {
        let declared = &spec["objects"][object][field];
        let known: Vec<&str> = declared["enum"]
            .as_array()
            .or(declared["mentions"].as_array())
            .map(|v| v.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        for variant in variants {
            let name = serde_json::to_value(variant).unwrap();
            if !known.contains(&name.as_str().unwrap()) {
                problems.push(format!("{object}.{field}: Stripe does not name the status {name}"));
            }
        }
    }

    #[test]
    fn every_typed_stripe_object_and_status_matches_stripes_spec() {
        let spec = spec();
        let mut problems = Vec::new();
        check(&spec, "payment_intent", &serde_json::to_value(PaymentIntent::default()).unwrap(), &mut problems);
        check(&spec, "charge", &serde_json::to_value(Charge::default()).unwrap(), &mut problems);
        check(&spec, "refund", &serde_json::to_value(Refund::default()).unwrap(), &mut problems);
        check(&spec, "dispute", &serde_json::to_value(Dispute::default()).unwrap(), &mut problems);
        check(&spec, "account", &serde_json::to_value(Account::default()).unwrap(), &mut problems);
        check(&spec, "account_link", &serde_json::to_value(AccountLink::default()).unwrap(), &mut problems);
        // The objects nested in those (Options, so null in a default instance).
        let nested = [
            ("payment_intent", "transfer_data", serde_json::to_value(TransferData::default()).unwrap()),
            ("payment_intent", "last_payment_error", serde_json::to_value(PaymentError::default()).unwrap()),
            ("account", "requirements", serde_json::to_value(AccountRequirements::default()).unwrap()),
        ];
        for (parent, field, ours) in nested {
            let object = spec["objects"][parent][field]["object"].as_str().expect("a nested object");
            check(&spec, object, &ours, &mut problems);
        }
        let list = spec["objects"]["charge"]["refunds"]["properties"]["data"]["items"].clone();
        assert_eq!(list, json!("refund"), "a charge's refunds are refunds");
        use PaymentIntentStatus as P;
        let intents = [
            P::Succeeded,
            P::Processing,
            P::RequiresPaymentMethod,
            P::RequiresConfirmation,
            P::RequiresAction,
            P::RequiresCapture,
            P::Canceled,
        ];
        check_statuses(&spec, "payment_intent", "status", &intents, &mut problems);
        use RefundStatus as R;
        let refunds = [R::Pending, R::RequiresAction, R::Succeeded, R::Failed, R::Canceled];
        check_statuses(&spec, "refund", "status", &refunds, &mut problems);
        use DisputeStatus as D;
        let disputes = [
            D::NeedsResponse,
            D::UnderReview,
            D::Won,
            D::Lost,
            D::WarningNeedsResponse,
            D::WarningUnderReview,
            D::WarningClosed,
        ];
        check_statuses(&spec, "dispute", "status", &disputes, &mut problems);
        assert!(problems.is_empty(), "typed Stripe objects differ from Stripe's spec:\n{}", problems.join("\n"));
        // The names venueql stores are Stripe's own.
        for status in disputes {
            assert_eq!(json!(status.as_str()), serde_json::to_value(status).unwrap());
        }
        for status in refunds {
            assert_eq!(json!(status.as_str().unwrap()), serde_json::to_value(status).unwrap());
        }
    }

    /// A value of the declared type; null where Stripe may send null (the strictest case).
    fn sample(spec: &Value, declared: &Value) -> Value {
        if declared["nullable"] == true {
            return Value::Null;
        }
        if let Some(first) = declared["enum"].as_array().and_then(|values| values.first()) {
            return first.clone();
        }
        match declared["type"].as_str() {
            Some("string") => json!("x"),
            Some("integer") | Some("number") => json!(0),
            Some("boolean") => json!(false),
            Some("array") => json!([]),
            _ => match (declared["object"].as_str(), declared.get("properties")) {
                (Some(object), _) if spec["objects"][object].is_object() => minimal(spec, &spec["objects"][object]),
                (_, Some(properties)) => minimal(spec, properties),
                _ => json!({}),
            },
        }
    }

    /// An object of this outline holding only the fields Stripe's spec requires.
    fn minimal(spec: &Value, outline: &Value) -> Value {
        let fields = outline.as_object().expect("an outline is an object");
        let required = fields.iter().filter(|(_, declared)| declared["required"] == true);
        Value::Object(required.map(|(name, declared)| (name.clone(), sample(spec, declared))).collect())
    }

    #[test]
    fn every_typed_object_reads_an_object_with_only_the_fields_stripes_spec_requires() {
        let spec = spec();
        let mut problems = Vec::new();
        let mut reads = |object: &str, read: &dyn Fn(&Value) -> Result<(), String>| {
            let outline = &spec["objects"][object];
            assert!(outline.is_object(), "the spec outline has no {object}");
            assert!(outline.as_object().unwrap().values().any(|d| d["required"].is_boolean()), "no required flags");
            if let Err(why) = read(&minimal(&spec, outline)) {
                problems.push(format!("{object}: {why} (a field Stripe does not require must be optional)"));
            }
        };
        reads("payment_intent", &|v| read::<PaymentIntent>("payment_intent", v).map(drop));
        reads("charge", &|v| read::<Charge>("charge", v).map(drop));
        reads("refund", &|v| read::<Refund>("refund", v).map(drop));
        reads("dispute", &|v| read::<Dispute>("dispute", v).map(drop));
        reads("account", &|v| read::<Account>("account", v).map(drop));
        reads("account_link", &|v| read::<AccountLink>("account_link", v).map(drop));
        reads("transfer_data", &|v| read::<TransferData>("transfer_data", v).map(drop));
        reads("api_errors", &|v| read::<PaymentError>("api_errors", v).map(drop));
        reads("account_requirements", &|v| read::<AccountRequirements>("account_requirements", v).map(drop));
        assert!(problems.is_empty(), "typed Stripe objects demand more than Stripe's spec:\n{}", problems.join("\n"));
        let account: Account = read("account", &json!({ "id": "acct_1", "object": "account" })).unwrap();
        assert_eq!((account.created, account.charges_enabled), (None, None), "absent is not said, never false");
    }

    #[test]
    fn an_unknown_status_is_read_as_other_not_an_error() {
        let refund: Refund =
            read("refund", &json!({ "id": "re_1", "amount": 5, "currency": "eur", "status": "new_thing" })).unwrap();
        assert_eq!(refund.status, Some(RefundStatus::Other));
        let dispute =
            json!({ "id": "dp_1", "amount": 5, "currency": "eur", "reason": "fraudulent", "status": "new_thing" });
        let dispute: Dispute = read("dispute", &dispute).unwrap();
        assert_eq!(dispute.status, DisputeStatusOnWire::Other("new_thing".into()));
        let dispute = json!({ "id": "dp_1", "amount": 5, "currency": "eur", "reason": "fraudulent", "status": "won" });
        assert_eq!(
            read::<Dispute>("dispute", &dispute).unwrap().status,
            DisputeStatusOnWire::Known(DisputeStatus::Won)
        );
        assert!(read::<Refund>("refund", &json!({ "id": "re_1" })).unwrap_err().contains("refund"));
    }
}
