//! The tax rates a venue sells at: named rates in parts per million (20% = 200,000;
//! 8.875% = 88,750), listed, created, renamed or changed, and deleted, each change audited
//! with its before and after. What the rates are applied to, and how, is
//! [`super::pricing`].

use serde::Serialize;
use uuid::Uuid;

use super::audit_change;
use crate::audit::Who;
use crate::error::AppError;
use crate::tenancy::VenueTx;

/// A tax rate of the venue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct TaxRate {
    /// Its id.
    pub id: Uuid,
    /// Its name on receipts ("VAT 20%").
    pub name: String,
    /// Parts per million.
    pub rate_ppm: i32,
}

/// What a create or update sets (an update leaves a field that is None as it is).
#[derive(Clone, Debug, Default)]
pub struct TaxRateFields {
    /// The name.
    pub name: Option<String>,
    /// The rate, parts per million (0 to 1,000,000).
    pub rate_ppm: Option<i32>,
}

const COLUMNS: &str = "id, name, rate_ppm";

fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 {
        return Err(AppError::bad_input("name must be 1 to 80 characters"));
    }
    Ok(name.to_string())
}

fn check_rate(rate_ppm: i32) -> Result<i32, AppError> {
    if !(0..=1_000_000).contains(&rate_ppm) {
        return Err(AppError::bad_input(
            "ratePpm must be between 0 and 1000000 (parts per million: 20% is 200000, 8.875% is 88750)",
        ));
    }
    Ok(rate_ppm)
}

/// A name another rate of the venue already has is the caller's mistake, said plainly.
fn name_taken(error: sqlx::Error) -> AppError {
    match &error {
        sqlx::Error::Database(db) if db.constraint() == Some("tax_rates_name_key") => {
            AppError::bad_input("the venue already has a tax rate with this name")
        }
        _ => error.into(),
    }
}

/// The venue's tax rates, by name.
pub async fn list(tx: &mut VenueTx) -> Result<Vec<TaxRate>, AppError> {
    Ok(sqlx::query_as(&format!("SELECT {COLUMNS} FROM tax_rates WHERE venue_id = $1 ORDER BY name"))
        .bind(tx.venue().as_uuid())
        .fetch_all(tx.conn())
        .await?)
}

async fn for_update(tx: &mut VenueTx, id: Uuid) -> Result<TaxRate, AppError> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM tax_rates WHERE venue_id = $1 AND id = $2 FOR UPDATE"))
        .bind(tx.venue().as_uuid())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(AppError::NotFound("tax rate"))
}

/// Creates a rate (audited).
pub async fn create(tx: &mut VenueTx, who: &Who, fields: TaxRateFields) -> Result<TaxRate, AppError> {
    let name = check_name(fields.name.as_deref().unwrap_or_default())?;
    let rate_ppm = check_rate(fields.rate_ppm.ok_or_else(|| AppError::bad_input("ratePpm is required"))?)?;
    let created: TaxRate = sqlx::query_as(&format!(
        "INSERT INTO tax_rates (venue_id, name, rate_ppm) VALUES ($1, $2, $3) RETURNING {COLUMNS}"
    ))
    .bind(tx.venue().as_uuid())
    .bind(&name)
    .bind(rate_ppm)
    .fetch_one(tx.conn())
    .await
    .map_err(name_taken)?;
    audit_change(tx, who, "tax_rate.created", "tax_rate", created.id, None, Some(&created)).await?;
    Ok(created)
}

/// Renames a rate or changes it (audited with before and after).
pub async fn update(tx: &mut VenueTx, who: &Who, id: Uuid, fields: TaxRateFields) -> Result<TaxRate, AppError> {
    let before = for_update(tx, id).await?;
    let name = match fields.name {
        Some(name) => check_name(&name)?,
        None => before.name.clone(),
    };
    let rate_ppm = check_rate(fields.rate_ppm.unwrap_or(before.rate_ppm))?;
    let after: TaxRate = sqlx::query_as(&format!(
        "UPDATE tax_rates SET name = $3, rate_ppm = $4, updated_at = now() WHERE venue_id = $1 AND id = $2 \
         RETURNING {COLUMNS}"
    ))
    .bind(tx.venue().as_uuid())
    .bind(id)
    .bind(&name)
    .bind(rate_ppm)
    .fetch_one(tx.conn())
    .await
    .map_err(name_taken)?;
    audit_change(tx, who, "tax_rate.updated", "tax_rate", id, Some(&before), Some(&after)).await?;
    Ok(after)
}

/// Deletes a rate (audited); refused while it is in use (the venue's default rate or its
/// service charge's rate).
pub async fn delete(tx: &mut VenueTx, who: &Who, id: Uuid) -> Result<(), AppError> {
    let before = for_update(tx, id).await?;
    sqlx::query("DELETE FROM tax_rates WHERE venue_id = $1 AND id = $2")
        .bind(tx.venue().as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await
        .map_err(|error| match &error {
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => AppError::bad_input(
                "this tax rate is in use (the venue's default rate or its service charge's rate): choose another first",
            ),
            _ => error.into(),
        })?;
    audit_change(tx, who, "tax_rate.deleted", "tax_rate", id, Some(&before), None).await
}
