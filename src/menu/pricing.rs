//! The price of a basket, to the minor unit: lines (each a unit price and a quantity at a
//! tax rate), a discount, a service charge, tax per rate in the venue's mode (prices
//! including tax, EU style, or tax added at checkout, US style) and a tip. Pure integer
//! arithmetic; the one place the breakdown is computed, so what a checkout charges, what
//! its PaymentIntent asks and what a receipt shows are the same numbers.
//!
//! The rule (docs/DESIGN.md, "Pricing"): the discount is taken off the subtotal and shared among the
//! tax rates in proportion to their lines (largest remainder, so the shares add up
//! exactly); the service charge is a share of the subtotal after discount, taxed at its
//! own rate when it has one; each rate's tax is computed once on its taxable total and
//! rounded half-up to the minor unit: `gross × r / (1 + r)` when prices include tax,
//! `net × r` when tax is added. The tip is untaxed. The amount charged is
//! `subtotal − discount + service charge + (tax when added) + tip`.

/// Parts per million of a whole: 20% = 200,000.
pub const PPM: i128 = 1_000_000;

/// Whether menu prices include tax.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaxMode {
    /// Prices include tax (EU style): the tax is the part of the price that is tax.
    Inclusive,
    /// Tax is added at checkout (US style).
    Exclusive,
}

/// A tax rate lines may be taxed at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rate {
    /// Its name on receipts ("VAT 20%").
    pub name: String,
    /// Parts per million (20% = 200,000; 8.875% = 88,750).
    pub ppm: u32,
}

/// One line of the basket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// The price of one, minor units (variant and modifiers included).
    pub unit_minor: i64,
    /// How many.
    pub quantity: u32,
    /// Index into the basket's rates (None: untaxed).
    pub rate: Option<usize>,
}

/// What is taken off the subtotal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Discount {
    /// Nothing.
    None,
    /// A share of the subtotal (rounded half-up), parts per million.
    Percent(u32),
    /// A fixed amount (never more than the subtotal).
    Amount(i64),
}

/// A basket to price.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Basket {
    /// The lines.
    pub lines: Vec<Line>,
    /// The rates lines and the service charge refer to.
    pub rates: Vec<Rate>,
    /// Whether prices include tax.
    pub mode: TaxMode,
    /// The promotion's discount.
    pub discount: Discount,
    /// The service charge, parts per million of the subtotal after discount.
    pub service_charge_ppm: u32,
    /// The rate the service charge is taxed at (None: untaxed).
    pub service_charge_rate: Option<usize>,
    /// The tip, minor units.
    pub tip_minor: i64,
}

/// One rate's tax in a breakdown.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaxLine {
    /// The rate's name.
    pub name: String,
    /// The rate.
    pub ppm: u32,
    /// What it was computed on (after discount, with the service charge's share).
    pub taxable_minor: i64,
    /// The tax.
    pub amount_minor: i64,
    /// Whether it is part of the prices (inclusive) rather than added.
    pub included: bool,
}

/// A priced basket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Breakdown {
    /// Every line's total.
    pub subtotal_minor: i64,
    /// Taken off.
    pub discount_minor: i64,
    /// The service charge.
    pub service_charge_minor: i64,
    /// Every rate's tax (included or added).
    pub tax_minor: i64,
    /// The tip.
    pub tip_minor: i64,
    /// What is charged: subtotal − discount + service charge + added tax + tip.
    pub amount_minor: i64,
    /// Tax per rate, in the basket's order of rates (rates with nothing taxable left out).
    pub taxes: Vec<TaxLine>,
}

/// Why a basket cannot be priced (each the caller's mistake).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PricingError {
    /// A price, quantity or amount below zero.
    #[error("{0} cannot be negative")]
    Negative(&'static str),
    /// A line or the service charge names a rate the basket does not have.
    #[error("a tax rate is missing")]
    UnknownRate,
    /// More than 100% off, or a share over 100%.
    #[error("{0} cannot exceed 100%")]
    OverWhole(&'static str),
    /// The total does not fit.
    #[error("the total is too large")]
    TooLarge,
}

/// `numerator / denominator` rounded half-up (both non-negative, denominator positive).
pub fn div_half_up(numerator: i128, denominator: i128) -> i128 {
    (2 * numerator + denominator) / (2 * denominator)
}

fn to_minor(value: i128) -> Result<i64, PricingError> {
    i64::try_from(value).map_err(|_| PricingError::TooLarge)
}

/// Shares `total` among `weights` in proportion, exactly: each share rounded down, then
/// the units left over go to the largest remainders (ties to the earlier weight).
pub fn share(total: i128, weights: &[i128]) -> Vec<i128> {
    let sum: i128 = weights.iter().sum();
    if sum == 0 {
        return vec![0; weights.len()];
    }
    let mut shares: Vec<i128> = weights.iter().map(|w| total * w / sum).collect();
    let mut left = total - shares.iter().sum::<i128>();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(total * weights[i] % sum), i));
    for i in order {
        if left == 0 {
            break;
        }
        shares[i] += 1;
        left -= 1;
    }
    shares
}

/// Prices `basket`.
pub fn price(basket: &Basket) -> Result<Breakdown, PricingError> {
    check(basket)?;
    // Subtotal per rate (index rates.len() holds untaxed lines).
    let untaxed = basket.rates.len();
    let mut by_rate = vec![0i128; untaxed + 1];
    for line in &basket.lines {
        by_rate[line.rate.unwrap_or(untaxed)] += i128::from(line.unit_minor) * i128::from(line.quantity);
    }
    let subtotal: i128 = by_rate.iter().sum();
    let discount = match basket.discount {
        Discount::None => 0,
        Discount::Percent(ppm) => div_half_up(subtotal * i128::from(ppm), PPM),
        Discount::Amount(amount) => i128::from(amount).min(subtotal),
    };
    let discount_shares = share(discount, &by_rate);
    let mut taxable: Vec<i128> = by_rate.iter().zip(&discount_shares).map(|(s, d)| s - d).collect();
    let service_charge = div_half_up((subtotal - discount) * i128::from(basket.service_charge_ppm), PPM);
    if let Some(rate) = basket.service_charge_rate {
        taxable[rate] += service_charge;
    }
    let mut taxes = Vec::new();
    for (rate, base) in basket.rates.iter().zip(&taxable) {
        if *base == 0 {
            continue;
        }
        let r = i128::from(rate.ppm);
        let amount = match basket.mode {
            TaxMode::Inclusive => div_half_up(base * r, PPM + r),
            TaxMode::Exclusive => div_half_up(base * r, PPM),
        };
        taxes.push(TaxLine {
            name: rate.name.clone(),
            ppm: rate.ppm,
            taxable_minor: to_minor(*base)?,
            amount_minor: to_minor(amount)?,
            included: basket.mode == TaxMode::Inclusive,
        });
    }
    let tax: i128 = taxes.iter().map(|t| i128::from(t.amount_minor)).sum();
    let added_tax = if basket.mode == TaxMode::Exclusive { tax } else { 0 };
    let tip = i128::from(basket.tip_minor);
    Ok(Breakdown {
        subtotal_minor: to_minor(subtotal)?,
        discount_minor: to_minor(discount)?,
        service_charge_minor: to_minor(service_charge)?,
        tax_minor: to_minor(tax)?,
        tip_minor: basket.tip_minor,
        amount_minor: to_minor(subtotal - discount + service_charge + added_tax + tip)?,
        taxes,
    })
}

fn check(basket: &Basket) -> Result<(), PricingError> {
    let known = |rate: Option<usize>| rate.is_none_or(|r| r < basket.rates.len());
    if !basket.lines.iter().all(|l| known(l.rate)) || !known(basket.service_charge_rate) {
        return Err(PricingError::UnknownRate);
    }
    if basket.lines.iter().any(|l| l.unit_minor < 0) {
        return Err(PricingError::Negative("a price"));
    }
    if basket.tip_minor < 0 {
        return Err(PricingError::Negative("a tip"));
    }
    match basket.discount {
        Discount::Amount(amount) if amount < 0 => return Err(PricingError::Negative("a discount")),
        Discount::Percent(ppm) if i128::from(ppm) > PPM => return Err(PricingError::OverWhole("a discount")),
        _ => {}
    }
    if i128::from(basket.service_charge_ppm) > PPM {
        return Err(PricingError::OverWhole("a service charge"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn rate(name: &str, ppm: u32) -> Rate {
        Rate { name: name.into(), ppm }
    }

    #[test]
    fn a_uk_basket_with_20_percent_vat_included() {
        // Two flat whites at £3.40 and a croissant at £2.95, all at 20% VAT included.
        let basket = Basket {
            lines: vec![
                Line { unit_minor: 340, quantity: 2, rate: Some(0) },
                Line { unit_minor: 295, quantity: 1, rate: Some(0) },
            ],
            rates: vec![rate("VAT 20%", 200_000)],
            mode: TaxMode::Inclusive,
            discount: Discount::None,
            service_charge_ppm: 0,
            service_charge_rate: None,
            tip_minor: 50,
        };
        let priced = price(&basket).unwrap();
        // 975 × 0.2 / 1.2 = 162.5 → 163 (half up); the tax is inside the 975.
        assert_eq!(priced.subtotal_minor, 975);
        assert_eq!(priced.tax_minor, 163);
        assert_eq!(priced.taxes[0].taxable_minor, 975);
        assert!(priced.taxes[0].included);
        assert_eq!(priced.amount_minor, 975 + 50);
    }

    #[test]
    fn a_new_york_basket_with_8_875_percent_added_and_a_service_charge() {
        // $12.00 and $4.50 at 8.875% added; a 12.5% service charge, taxed at the same rate.
        let basket = Basket {
            lines: vec![
                Line { unit_minor: 1200, quantity: 1, rate: Some(0) },
                Line { unit_minor: 450, quantity: 1, rate: Some(0) },
            ],
            rates: vec![rate("Sales tax 8.875%", 88_750)],
            mode: TaxMode::Exclusive,
            discount: Discount::Amount(150),
            service_charge_ppm: 125_000,
            service_charge_rate: Some(0),
            tip_minor: 300,
        };
        let priced = price(&basket).unwrap();
        // Subtotal 1650, discount 150 → 1500; service 12.5% of 1500 = 187.5 → 188;
        // taxable 1500 + 188 = 1688; tax 1688 × 0.08875 = 149.81 → 150.
        assert_eq!(priced.subtotal_minor, 1650);
        assert_eq!(priced.service_charge_minor, 188);
        assert_eq!(priced.taxes[0].taxable_minor, 1688);
        assert_eq!(priced.tax_minor, 150);
        assert_eq!(priced.amount_minor, 1650 - 150 + 188 + 150 + 300);
    }

    #[test]
    fn shares_add_up_exactly_and_follow_the_weights() {
        assert_eq!(share(100, &[1, 1, 1]), [34, 33, 33]);
        assert_eq!(share(7, &[0, 5, 2]), [0, 5, 2]);
        assert_eq!(share(0, &[3, 4]), [0, 0]);
        assert_eq!(share(5, &[0, 0]), [0, 0]);
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        let mut basket = Basket {
            lines: vec![Line { unit_minor: 100, quantity: 1, rate: Some(1) }],
            rates: vec![rate("VAT", 200_000)],
            mode: TaxMode::Inclusive,
            discount: Discount::None,
            service_charge_ppm: 0,
            service_charge_rate: None,
            tip_minor: 0,
        };
        assert_eq!(price(&basket), Err(PricingError::UnknownRate));
        basket.lines[0].rate = Some(0);
        basket.tip_minor = -1;
        assert_eq!(price(&basket).unwrap_err().to_string(), "a tip cannot be negative");
        basket.tip_minor = 0;
        basket.discount = Discount::Percent(1_000_001);
        assert_eq!(price(&basket).unwrap_err().to_string(), "a discount cannot exceed 100%");
    }

    fn baskets() -> impl Strategy<Value = Basket> {
        let rates = prop::collection::vec(0u32..=300_000, 1..4);
        rates.prop_flat_map(|ppms| {
            let count = ppms.len();
            let line = (0i64..20_000, 1u32..20, prop::option::of(0..count))
                .prop_map(|(unit_minor, quantity, rate)| Line { unit_minor, quantity, rate });
            let discount = prop_oneof![
                Just(Discount::None),
                (0u32..=1_000_000).prop_map(Discount::Percent),
                (0i64..500_000).prop_map(Discount::Amount),
            ];
            (
                prop::collection::vec(line, 0..12),
                Just(ppms),
                prop_oneof![Just(TaxMode::Inclusive), Just(TaxMode::Exclusive)],
                discount,
                0u32..=250_000,
                prop::option::of(0..count),
                0i64..10_000,
            )
                .prop_map(
                    |(lines, ppms, mode, discount, service_charge_ppm, service_charge_rate, tip_minor)| Basket {
                        lines,
                        rates: ppms.iter().enumerate().map(|(i, ppm)| rate(&format!("rate {i}"), *ppm)).collect(),
                        mode,
                        discount,
                        service_charge_ppm,
                        service_charge_rate,
                        tip_minor,
                    },
                )
        })
    }

    proptest! {
        #[test]
        fn the_breakdown_adds_up_nothing_is_negative_and_each_tax_is_within_half_a_unit(basket in baskets()) {
            let priced = price(&basket).unwrap();
            let added = if basket.mode == TaxMode::Exclusive { priced.tax_minor } else { 0 };
            prop_assert_eq!(
                priced.amount_minor,
                priced.subtotal_minor - priced.discount_minor + priced.service_charge_minor + added + priced.tip_minor
            );
            for figure in [priced.subtotal_minor, priced.discount_minor, priced.service_charge_minor, priced.tax_minor, priced.amount_minor] {
                prop_assert!(figure >= 0);
            }
            prop_assert!(priced.discount_minor <= priced.subtotal_minor);
            prop_assert_eq!(priced.tax_minor, priced.taxes.iter().map(|t| t.amount_minor).sum::<i64>());
            // Each rate's tax against the exact rational value, in millionths of a unit.
            for tax in &priced.taxes {
                let (base, r) = (i128::from(tax.taxable_minor), i128::from(tax.ppm));
                let (numerator, denominator) = match basket.mode {
                    TaxMode::Inclusive => (base * r, PPM + r),
                    TaxMode::Exclusive => (base * r, PPM),
                };
                let error = (i128::from(tax.amount_minor) * denominator - numerator).abs();
                prop_assert!(2 * error <= denominator, "{:?}", tax);
            }
            // The taxable bases share the discounted subtotal (plus a taxed service charge).
            let taxed_service = if basket.service_charge_rate.is_some() { priced.service_charge_minor } else { 0 };
            let untaxed: i64 = basket.lines.iter().filter(|l| l.rate.is_none()).map(|l| l.unit_minor * i64::from(l.quantity)).sum();
            let bases: i64 = priced.taxes.iter().map(|t| t.taxable_minor).sum();
            prop_assert!(bases <= priced.subtotal_minor - priced.discount_minor + taxed_service);
            prop_assert!(bases + untaxed >= priced.subtotal_minor - priced.discount_minor + taxed_service);
        }
    }
}
