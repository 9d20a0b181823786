//! Stripe payments. So far: webhook signature verification, exactly as Stripe's official
//! libraries do it (the webhook endpoints, Stripe client and Connect onboarding build on it).

pub mod events;
pub mod signature;
