//! Diners' checkouts: the server prices the basket from the venue's menu (never from the
//! client), stores it, and creates a PaymentIntent as a destination charge to the venue's
//! connected account with the platform's fee. A checkout is not an order: the order comes
//! only from the verified `payment_intent.succeeded` event (see `effects`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Payments;
use super::stripe::{Params, metadata};
use crate::error::AppError;
use crate::tenancy::{Db, VenueId, VenueTx};

/// Where a checkout stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckoutStatus {
    /// Priced; its PaymentIntent is being created.
    Creating,
    /// Waiting for the payment.
    Pending,
    /// Paid: its order exists.
    Succeeded,
    /// The payment failed (the diner may try again with the same PaymentIntent).
    Failed,
    /// The payment was cancelled.
    Canceled,
    /// Nobody paid in time; its PaymentIntent is cancelled.
    Expired,
}

impl CheckoutStatus {
    const NAMES: [(CheckoutStatus, &'static str); 6] = [
        (CheckoutStatus::Creating, "creating"),
        (CheckoutStatus::Pending, "pending"),
        (CheckoutStatus::Succeeded, "succeeded"),
        (CheckoutStatus::Failed, "failed"),
        (CheckoutStatus::Canceled, "canceled"),
        (CheckoutStatus::Expired, "expired"),
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        Self::NAMES.iter().find(|(s, _)| *s == self).map(|(_, n)| *n).unwrap_or("creating")
    }

    /// The status of a stored name.
    pub fn from_stored(name: &str) -> CheckoutStatus {
        Self::NAMES.iter().find(|(_, n)| *n == name).map(|(s, _)| *s).unwrap_or(CheckoutStatus::Creating)
    }
}

/// Most lines in one checkout.
pub const MAX_LINES: usize = 50;
/// Most of one item in a line.
pub const MAX_QUANTITY: i32 = 99;
/// Largest checkout total, in minor units (10,000.00 in a two-decimal currency).
pub const MAX_TOTAL_MINOR: i64 = 1_000_000;
/// Smallest checkout total Stripe accepts in most currencies (0.50).
pub const MIN_TOTAL_MINOR: i64 = 50;
/// Longest kitchen note on a line.
pub const MAX_NOTE_CHARS: usize = 200;

/// One line of a diner's basket.
#[derive(Clone, Debug)]
pub struct Line {
    /// The menu item.
    pub menu_item_id: Uuid,
    /// How many.
    pub quantity: i32,
    /// A note for the kitchen.
    pub note: Option<String>,
}

/// What the diner needs to pay with Stripe.js.
#[derive(Clone, Debug)]
pub struct Started {
    /// The checkout id (for `checkout(id, clientSecret)`).
    pub checkout_id: Uuid,
    /// The PaymentIntent's client secret, for Stripe.js.
    pub client_secret: String,
    /// Total in minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
}

fn check_lines(lines: &[Line], table_ref: Option<&str>) -> Result<(), AppError> {
    if lines.is_empty() || lines.len() > MAX_LINES {
        return Err(AppError::bad_input(format!("a checkout needs 1 to {MAX_LINES} items, not {}", lines.len())));
    }
    for (index, line) in lines.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            let message = format!("items[{index}].quantity must be 1 to {MAX_QUANTITY}, not {}", line.quantity);
            return Err(AppError::bad_input(message));
        }
        if let Some(note) = &line.note
            && (note.chars().count() > MAX_NOTE_CHARS || note.chars().any(char::is_control))
        {
            let message =
                format!("items[{index}].note must be at most {MAX_NOTE_CHARS} characters, without control characters");
            return Err(AppError::bad_input(message));
        }
    }
    if let Some(table) = table_ref
        && (table.trim().is_empty() || table.chars().count() > 40 || table.chars().any(char::is_control))
    {
        return Err(AppError::bad_input("tableRef must be 1 to 40 characters"));
    }
    Ok(())
}

/// A priced basket.
struct Priced {
    total: i64,
    currency: String,
    names: Vec<String>,
    prices: Vec<i64>,
    allergens: Vec<String>,
}

async fn price(tx: &mut VenueTx, lines: &[Line]) -> Result<Priced, AppError> {
    let ids: Vec<Uuid> = lines.iter().map(|l| l.menu_item_id).collect();
    let items = crate::menu::available_items(tx, &ids).await?;
    let currency = crate::venues::current(tx).await?.currency;
    let mut priced = Priced { total: 0, currency, names: vec![], prices: vec![], allergens: vec![] };
    for (index, line) in lines.iter().enumerate() {
        let item = items.iter().find(|i| i.id == line.menu_item_id).ok_or_else(|| {
            AppError::bad_input(format!("items[{index}].menuItemId is not an available item of this venue's menu"))
        })?;
        if item.currency != priced.currency {
            return Err(AppError::bad_input(format!(
                "items[{index}] is priced in {}, not the venue's currency",
                item.currency
            )));
        }
        let line_total = item.price_minor.checked_mul(i64::from(line.quantity));
        priced.total = line_total.and_then(|t| priced.total.checked_add(t)).unwrap_or(i64::MAX);
        priced.names.push(item.name.clone());
        priced.prices.push(item.price_minor);
        priced.allergens.push(item.allergens.join(","));
    }
    if !(MIN_TOTAL_MINOR..=MAX_TOTAL_MINOR).contains(&priced.total) {
        let message = format!(
            "the checkout total must be {MIN_TOTAL_MINOR} to {MAX_TOTAL_MINOR} minor units of {}; this basket comes to {}",
            priced.currency, priced.total
        );
        return Err(AppError::bad_input(message));
    }
    Ok(priced)
}

/// `startCheckout`: prices, records the diner (when they gave details), stores the
/// checkout and creates the PaymentIntent.
pub async fn start(
    db: &Db,
    payments: &Payments,
    venue: VenueId,
    lines: &[Line],
    table_ref: Option<&str>,
    diner: Option<(&crate::diners::DinerDetails, &crate::crypto::KeyRing)>,
) -> Result<Started, AppError> {
    check_lines(lines, table_ref)?;
    let client = payments.client()?;
    let mut tx = db.venue_tx(venue).await?;
    let account = super::accounts::find(&mut tx).await?.filter(|a| a.charges_enabled).ok_or_else(|| {
        AppError::Unavailable(
            "this venue is not taking online payments yet: its Stripe onboarding is not complete".into(),
        )
    })?;
    let priced = price(&mut tx, lines).await?;
    let diner = match diner {
        Some((details, keys)) => Some(crate::diners::record(&mut tx, keys, details).await?),
        None => None,
    };
    let fee = payments.application_fee(priced.total);
    let expires_at = Utc::now() + payments.checkout_expiry;
    let checkout_id: Uuid = sqlx::query_scalar(
        "INSERT INTO checkouts (venue_id, amount_minor, currency, application_fee_minor, table_ref, expires_at, diner_id, \
                                share_consent, shared_allergens, shared_notes, diner_verified) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
    )
    .bind(venue.as_uuid())
    .bind(priced.total)
    .bind(&priced.currency)
    .bind(fee)
    .bind(table_ref.map(str::trim))
    .bind(expires_at)
    .bind(diner.as_ref().map(|d| d.diner_id))
    .bind(diner.as_ref().and_then(|d| d.share_consent))
    .bind(diner.as_ref().and_then(|d| d.shared_allergens.clone()))
    .bind(diner.as_ref().and_then(|d| d.shared_notes.clone()))
    .bind(diner.as_ref().is_some_and(|d| d.verified))
    .fetch_one(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO checkout_items (venue_id, checkout_id, line, menu_item_id, name, unit_price_minor, quantity, note, allergens) \
         SELECT $1, $2, l.line, l.item, l.name, l.price, l.quantity, NULLIF(trim(l.note), ''), \
                CASE WHEN l.allergens = '' THEN '{}'::text[] ELSE string_to_array(l.allergens, ',') END \
         FROM unnest($3::uuid[], $4::text[], $5::bigint[], $6::int[], $7::text[], $8::text[]) \
              WITH ORDINALITY AS l(item, name, price, quantity, note, allergens, line)",
    )
    .bind(venue.as_uuid())
    .bind(checkout_id)
    .bind(lines.iter().map(|l| l.menu_item_id).collect::<Vec<_>>())
    .bind(&priced.names)
    .bind(&priced.prices)
    .bind(lines.iter().map(|l| l.quantity).collect::<Vec<_>>())
    .bind(lines.iter().map(|l| l.note.clone()).collect::<Vec<_>>())
    .bind(&priced.allergens)
    .execute(tx.conn())
    .await?;
    tx.commit().await?;

    let mut params: Params = vec![
        ("amount".into(), priced.total.to_string()),
        ("currency".into(), priced.currency.to_ascii_lowercase()),
        ("automatic_payment_methods[enabled]".into(), "true".into()),
        ("on_behalf_of".into(), account.account_id.clone()),
        ("transfer_data[destination]".into(), account.account_id.clone()),
    ];
    if fee > 0 {
        params.push(("application_fee_amount".into(), fee.to_string()));
    }
    metadata(&mut params, &[("venue_id", venue.to_string()), ("checkout_id", checkout_id.to_string())]);
    let key = format!("venueql-checkout-{checkout_id}-payment-intent");
    let intent = match client.post("/v1/payment_intents", &key, &params).await {
        Ok(intent) => intent,
        Err(error) => {
            mark_failed(db, venue, checkout_id, "the payment provider refused or could not be reached").await?;
            return Err(error.into());
        }
    };
    let intent: super::objects::PaymentIntent =
        super::objects::read("PaymentIntent", &intent).map_err(AppError::internal)?;
    let Some(client_secret) = intent.client_secret.as_deref() else {
        return Err(AppError::internal("Stripe's new PaymentIntent has no client_secret"));
    };
    let intent_id = intent.id.as_str();
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query(
        "UPDATE checkouts SET status = 'pending', payment_intent_id = $2, client_secret_hash = $3, updated_at = now() \
         WHERE id = $1 AND status = 'creating'",
    )
    .bind(checkout_id)
    .bind(intent_id)
    .bind(crate::auth::secrets::hash(client_secret))
    .execute(tx.conn())
    .await?;
    sqlx::query("SELECT private.register_payment_intent($1, $2)")
        .bind(intent_id)
        .bind(checkout_id)
        .execute(tx.conn())
        .await?;
    tx.commit().await?;
    Ok(Started {
        checkout_id,
        client_secret: client_secret.to_string(),
        amount_minor: priced.total,
        currency: priced.currency,
    })
}

async fn mark_failed(db: &Db, venue: VenueId, checkout_id: Uuid, reason: &str) -> Result<(), AppError> {
    let mut tx = db.venue_tx(venue).await?;
    sqlx::query("UPDATE checkouts SET status = 'failed', failure_reason = $2, updated_at = now() WHERE id = $1")
        .bind(checkout_id)
        .bind(reason)
        .execute(tx.conn())
        .await?;
    Ok(tx.commit().await?)
}

/// What the diner holding the client secret may see of their checkout.
#[derive(Clone, Debug)]
pub struct Status {
    /// The checkout id.
    pub id: Uuid,
    /// Where it stands.
    pub status: CheckoutStatus,
    /// Total in minor units.
    pub amount_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// When an unpaid checkout expires.
    pub expires_at: DateTime<Utc>,
    /// The order number, once paid.
    pub order_number: Option<i64>,
}

/// `checkout(id, clientSecret)`: NOT_FOUND unless the secret is this checkout's (another
/// venue's checkout, an unknown id and a wrong secret look the same). The stored form is
/// the secret's SHA-256, compared in SQL: a digest match leaks nothing about the secret.
pub async fn status(db: &Db, venue: VenueId, id: Uuid, client_secret: &str) -> Result<Status, AppError> {
    let mut tx = db.venue_tx(venue).await?;
    let found: Option<(Uuid, String, i64, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT c.id, c.status, c.amount_minor, c.currency, c.expires_at \
         FROM checkouts c WHERE c.id = $1 AND c.client_secret_hash = $2",
    )
    .bind(id)
    .bind(crate::auth::secrets::hash(client_secret))
    .fetch_optional(tx.conn())
    .await?;
    let Some((id, status, amount_minor, currency, expires_at)) = found else {
        tx.commit().await?;
        return Err(AppError::NotFound("checkout"));
    };
    let order_number = crate::orders::place::number_of_checkout(&mut tx, id).await?;
    tx.commit().await?;
    Ok(Status { id, status: CheckoutStatus::from_stored(&status), amount_minor, currency, expires_at, order_number })
}

/// Deletes the venue's expired and cancelled checkouts (never paid) untouched since
/// `before`, with their lines and PaymentIntent routes; returns how many. A `failed` one
/// may still be paid with the same PaymentIntent, so it waits for the payment job to
/// expire it.
pub async fn delete_abandoned(tx: &mut VenueTx, before: DateTime<Utc>) -> Result<u64, AppError> {
    let abandoned: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM checkouts WHERE status IN ('expired', 'canceled') AND updated_at < $1 ORDER BY id FOR UPDATE",
    )
    .bind(before)
    .fetch_all(tx.conn())
    .await?;
    if abandoned.is_empty() {
        return Ok(0);
    }
    sqlx::query("DELETE FROM checkout_items WHERE checkout_id = ANY($1)").bind(&abandoned).execute(tx.conn()).await?;
    sqlx::query("SELECT private.forget_payment_intents($1)").bind(&abandoned).execute(tx.conn()).await?;
    let deleted = sqlx::query("DELETE FROM checkouts WHERE id = ANY($1)").bind(&abandoned).execute(tx.conn()).await?;
    Ok(deleted.rows_affected())
}

/// Diners of the venue with a checkout that may still be paid (their statements are
/// needed for the order it may become).
pub async fn diners_with_open_checkouts(tx: &mut VenueTx) -> Result<Vec<Uuid>, AppError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT diner_id FROM checkouts WHERE diner_id IS NOT NULL AND status IN ('creating', 'pending', 'failed')",
    )
    .fetch_all(tx.conn())
    .await?)
}
