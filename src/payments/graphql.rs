//! GraphQL surface of payments: Stripe onboarding for staff (`startStripeOnboarding`,
//! `stripeAccount`) and checkout for diners on the venue's public endpoint
//! (`startCheckout`, `checkout`). No field here creates an order.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};
use chrono::{DateTime, Utc};

use super::{Payments, accounts, checkout};
use crate::access::Permissions;
use crate::crypto::KeyRing;
use crate::diners::{DinerDetails, verification};
use crate::error::AppError;
use crate::graphql::context::{self, commit, public, staff, staff_tx};
use crate::graphql::parse_id;
use crate::graphql::permission_guard::Requires;
use crate::menu::Allergen;

/// The venue's Stripe connected account.
#[derive(SimpleObject)]
pub struct StripeAccount {
    /// `acct_…`.
    account_id: String,
    /// Whether the venue can take payments now.
    charges_enabled: bool,
    /// Whether Stripe pays out to the venue.
    payouts_enabled: bool,
    /// Whether the venue completed Stripe's onboarding form.
    details_submitted: bool,
    /// What Stripe still needs (`requirements.currently_due`).
    requirements_due: Vec<String>,
    /// Why the account is restricted, if it is.
    disabled_reason: Option<String>,
}

impl From<accounts::AccountState> for StripeAccount {
    fn from(a: accounts::AccountState) -> StripeAccount {
        StripeAccount {
            account_id: a.account_id,
            charges_enabled: a.charges_enabled,
            payouts_enabled: a.payouts_enabled,
            details_submitted: a.details_submitted,
            requirements_due: a.requirements_due,
            disabled_reason: a.disabled_reason,
        }
    }
}

/// Where to send the venue's owner to finish onboarding.
#[derive(SimpleObject)]
pub struct StripeOnboardingLink {
    /// The venue's connected account.
    account_id: String,
    /// Stripe's hosted onboarding page; single use, valid for a few minutes.
    url: String,
}

/// Staff payment queries.
#[derive(Default)]
pub struct PaymentsQuery;

#[Object]
impl PaymentsQuery {
    /// The venue's Stripe account and onboarding state (null before onboarding starts).
    #[graphql(guard = "Requires(Permissions::PAYMENTS_VIEW)")]
    async fn stripe_account(&self, ctx: &Context<'_>) -> Result<Option<StripeAccount>> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let account = accounts::find(&mut tx).await?;
        commit(tx).await?;
        Ok(account.map(StripeAccount::from))
    }
}

/// Staff payment mutations.
#[derive(Default)]
pub struct PaymentsMutation;

#[Object]
impl PaymentsMutation {
    /// Creates the venue's Stripe Express account (once; later calls reuse it) and returns
    /// a fresh onboarding link. Stripe sends the owner back to `returnUrl`, or to
    /// `refreshUrl` when the link expired.
    #[graphql(guard = "Requires(Permissions::PAYMENTS_MANAGE)")]
    async fn start_stripe_onboarding(
        &self,
        ctx: &Context<'_>,
        return_url: String,
        refresh_url: String,
    ) -> Result<StripeOnboardingLink> {
        let staff = staff(ctx)?;
        let db = context::db(ctx)?;
        let payments = context::service::<Payments>(ctx)?;
        let link =
            accounts::start_onboarding(db, payments, staff.venue, &staff.who(), &return_url, &refresh_url).await?;
        Ok(StripeOnboardingLink { account_id: link.account_id, url: link.url })
    }
}

/// One line of a diner's basket.
#[derive(InputObject)]
pub struct CheckoutItemInput {
    /// An available item of this venue's menu.
    menu_item_id: ID,
    /// 1 to 99.
    quantity: i32,
    /// A note for the kitchen (at most 200 characters).
    note: Option<String>,
}

/// What a diner may tell the venue: who they are (email or phone, kept only as a keyed
/// hash), their allergens and dietary notes (kept only encrypted), and whether to share
/// their allergen profile with other venues.
#[derive(InputObject)]
pub struct DinerInput {
    /// Email (give this or phone).
    email: Option<String>,
    /// Phone in international form, e.g. +353 1 234 5678 (give this or email).
    phone: Option<String>,
    /// Allergens the kitchen must know about.
    allergens: Option<Vec<Allergen>>,
    /// Other dietary needs (at most 500 characters).
    dietary_notes: Option<String>,
    /// true: share this allergen profile with other venues; false: stop sharing it now;
    /// omitted: leave as it is. Either needs `proof`.
    share_allergen_profile: Option<bool>,
    /// The proof from `verifyDinerCode` that the email is yours (at this venue, 30
    /// minutes). Without it, what you tell reaches this order's kitchen only.
    proof: Option<String>,
}

/// A diner's basket.
#[derive(InputObject)]
pub struct StartCheckoutInput {
    /// 1 to 50 lines.
    items: Vec<CheckoutItemInput>,
    /// The table, if the venue serves at tables (at most 40 characters).
    table_ref: Option<String>,
    /// The diner's details, optional.
    diner: Option<DinerInput>,
}

/// What Stripe.js needs to take the payment.
#[derive(SimpleObject)]
pub struct StartedCheckout {
    /// The checkout, for `checkout(id, clientSecret)`.
    checkout_id: ID,
    /// The PaymentIntent's client secret, for Stripe.js `confirmPayment`.
    client_secret: String,
    /// Total, priced by the server, minor units.
    amount_minor: i32,
    /// ISO 4217.
    currency: String,
}

/// A checkout as its diner sees it.
#[derive(SimpleObject)]
pub struct Checkout {
    /// Checkout id.
    id: ID,
    /// PENDING until paid; SUCCEEDED once Stripe confirmed the payment (then `orderNumber`
    /// is set); FAILED, CANCELED or EXPIRED otherwise.
    status: String,
    /// Total, minor units.
    amount_minor: i32,
    /// ISO 4217.
    currency: String,
    /// When an unpaid checkout expires.
    expires_at: DateTime<Utc>,
    /// The order number, once paid.
    order_number: Option<i32>,
}

/// Diner queries about their checkout.
#[derive(Default)]
pub struct PublicCheckoutQuery;

#[Object]
impl PublicCheckoutQuery {
    /// The status of a checkout, for the diner holding its client secret.
    async fn checkout(&self, ctx: &Context<'_>, id: ID, client_secret: String) -> Result<Checkout> {
        let id = parse_id(&id, "id")?;
        let venue = public(ctx)?.venue;
        let status = checkout::status(context::db(ctx)?, venue, id, &client_secret).await?;
        Ok(Checkout {
            id: status.id.into(),
            status: status.status.as_str().to_ascii_uppercase(),
            amount_minor: i32::try_from(status.amount_minor).unwrap_or(i32::MAX),
            currency: status.currency,
            expires_at: status.expires_at,
            order_number: status.order_number.map(|n| i32::try_from(n).unwrap_or(i32::MAX)),
        })
    }
}

/// Diner mutations.
#[derive(Default)]
pub struct PublicCheckoutMutation;

#[Object]
impl PublicCheckoutMutation {
    /// Prices the basket from the menu and creates the Stripe payment. This is not an
    /// order: the order exists once Stripe confirms the payment.
    async fn start_checkout(&self, ctx: &Context<'_>, input: StartCheckoutInput) -> Result<StartedCheckout> {
        let venue = public(ctx)?.venue;
        let mut lines = Vec::with_capacity(input.items.len());
        for (index, item) in input.items.iter().enumerate() {
            lines.push(checkout::Line {
                menu_item_id: parse_id(&item.menu_item_id, &format!("items[{index}].menuItemId"))?,
                quantity: item.quantity,
                note: item.note.clone(),
            });
        }
        let payments = context::service::<Payments>(ctx)?;
        let keys = context::service::<KeyRing>(ctx)?;
        let app_key = secrecy::ExposeSecret::expose_secret(context::config(ctx)?.app_key.as_ref());
        let details = match input.diner {
            Some(d) => {
                let verified = match (&d.proof, &d.email) {
                    (None, _) => false,
                    (Some(proof), Some(email)) if verification::proves(app_key, keys, venue, email, proof)? => true,
                    (Some(_), _) => {
                        return Err(AppError::bad_input(
                            "diner.proof does not prove this email at this venue (or has expired): verify it again",
                        )
                        .into());
                    }
                };
                Some(DinerDetails {
                    email: d.email,
                    phone: d.phone,
                    allergens: d.allergens.unwrap_or_default(),
                    dietary_notes: d.dietary_notes,
                    share_allergen_profile: d.share_allergen_profile,
                    verified,
                })
            }
            None => None,
        };
        let diner = details.as_ref().map(|d| (d, keys));
        let db = context::db(ctx)?;
        let started = checkout::start(db, payments, venue, &lines, input.table_ref.as_deref(), diner).await?;
        Ok(StartedCheckout {
            checkout_id: started.checkout_id.into(),
            client_secret: started.client_secret,
            amount_minor: i32::try_from(started.amount_minor).unwrap_or(i32::MAX),
            currency: started.currency,
        })
    }
}
