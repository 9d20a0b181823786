//! The menu: categories and items per venue, prices in integer minor units, the 14
//! EU-declared allergens, availability, and full-text search within the venue.
//! Every mutation writes its audit row in the same transaction.

pub mod graphql;
pub mod pricing;
pub mod taxes;

use serde::Serialize;
use uuid::Uuid;

use crate::audit::{self, Change, Who};
use crate::error::AppError;
use crate::tenancy::VenueTx;

/// The 14 allergens EU Regulation 1169/2011 (Annex II) requires venues to declare.
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Allergen {
    /// Celery and celeriac.
    Celery,
    /// Wheat, rye, barley, oats and their hybrids.
    CerealsContainingGluten,
    /// Crabs, lobster, prawns, scampi.
    Crustaceans,
    /// Eggs.
    Eggs,
    /// Fish.
    Fish,
    /// Lupin.
    Lupin,
    /// Milk (including lactose).
    Milk,
    /// Mussels, oysters, squid, snails.
    Molluscs,
    /// Mustard.
    Mustard,
    /// Almonds, hazelnuts, walnuts, cashews, pecans, Brazil nuts, pistachios, macadamias.
    TreeNuts,
    /// Peanuts.
    Peanuts,
    /// Sesame seeds.
    Sesame,
    /// Soybeans.
    Soybeans,
    /// Sulphur dioxide and sulphites above 10 mg/kg or 10 mg/l.
    Sulphites,
}

impl Allergen {
    /// All 14, in the order the regulation lists them alphabetically.
    pub const ALL: [Allergen; 14] = [
        Allergen::Celery,
        Allergen::CerealsContainingGluten,
        Allergen::Crustaceans,
        Allergen::Eggs,
        Allergen::Fish,
        Allergen::Lupin,
        Allergen::Milk,
        Allergen::Molluscs,
        Allergen::Mustard,
        Allergen::TreeNuts,
        Allergen::Peanuts,
        Allergen::Sesame,
        Allergen::Soybeans,
        Allergen::Sulphites,
    ];

    /// The stored (and GraphQL) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Allergen::Celery => "CELERY",
            Allergen::CerealsContainingGluten => "CEREALS_CONTAINING_GLUTEN",
            Allergen::Crustaceans => "CRUSTACEANS",
            Allergen::Eggs => "EGGS",
            Allergen::Fish => "FISH",
            Allergen::Lupin => "LUPIN",
            Allergen::Milk => "MILK",
            Allergen::Molluscs => "MOLLUSCS",
            Allergen::Mustard => "MUSTARD",
            Allergen::TreeNuts => "TREE_NUTS",
            Allergen::Peanuts => "PEANUTS",
            Allergen::Sesame => "SESAME",
            Allergen::Soybeans => "SOYBEANS",
            Allergen::Sulphites => "SULPHITES",
        }
    }

    /// The allergen with this stored name.
    pub fn from_stored(name: &str) -> Option<Allergen> {
        Allergen::ALL.into_iter().find(|a| a.as_str() == name)
    }
}

/// Which items a reader may see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    /// Staff with MENU_VIEW: everything.
    All,
    /// Diners: available items only.
    AvailableOnly,
}

/// A menu category.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Category {
    /// Category id.
    pub id: Uuid,
    /// Display name, unique within the venue.
    pub name: String,
    /// Display order, ascending.
    pub position: i32,
}

/// A menu item.
#[derive(Clone, Debug, Serialize)]
pub struct Item {
    /// Item id.
    pub id: Uuid,
    /// Its category.
    pub category_id: Uuid,
    /// Display name.
    pub name: String,
    /// Longer description.
    pub description: String,
    /// Price in minor units of `currency`.
    pub price_minor: i64,
    /// ISO 4217 currency (the venue's).
    pub currency: String,
    /// Declared allergens.
    pub allergens: Vec<Allergen>,
    /// Whether diners can order it now.
    pub available: bool,
    /// Display order within the category.
    pub position: i32,
}

#[derive(sqlx::FromRow)]
struct ItemRow {
    id: Uuid,
    category_id: Uuid,
    name: String,
    description: String,
    price_minor: i64,
    currency: String,
    allergens: Vec<String>,
    available: bool,
    position: i32,
}

impl From<ItemRow> for Item {
    fn from(row: ItemRow) -> Item {
        Item {
            id: row.id,
            category_id: row.category_id,
            name: row.name,
            description: row.description,
            price_minor: row.price_minor,
            currency: row.currency,
            allergens: row.allergens.iter().filter_map(|a| Allergen::from_stored(a)).collect(),
            available: row.available,
            position: row.position,
        }
    }
}

const ITEM_COLUMNS: &str = "id, category_id, name, description, price_minor, currency, allergens, available, position";

/// A category with its items, as the `menu` query returns it.
#[derive(Clone, Debug)]
pub struct CategoryWithItems {
    /// The category.
    pub category: Category,
    /// Its items in display order.
    pub items: Vec<Item>,
}

/// Largest price accepted, in minor units (1,000,000.00 in a two-decimal currency).
pub const MAX_PRICE_MINOR: i64 = 100_000_000;

/// The whole menu of the transaction's venue in two queries. Diners see only categories
/// that have an available item.
pub async fn load(tx: &mut VenueTx, visibility: Visibility) -> Result<Vec<CategoryWithItems>, AppError> {
    let venue = tx.venue().as_uuid();
    let categories: Vec<Category> =
        sqlx::query_as("SELECT id, name, position FROM menu_categories WHERE venue_id = $1 ORDER BY position, name")
            .bind(venue)
            .fetch_all(tx.conn())
            .await?;
    let items: Vec<ItemRow> = sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM menu_items WHERE venue_id = $1 AND (available OR $2) ORDER BY position, name"
    ))
    .bind(venue)
    .bind(visibility == Visibility::All)
    .fetch_all(tx.conn())
    .await?;
    let mut menu: Vec<CategoryWithItems> =
        categories.into_iter().map(|category| CategoryWithItems { category, items: Vec::new() }).collect();
    for item in items {
        if let Some(entry) = menu.iter_mut().find(|c| c.category.id == item.category_id) {
            entry.items.push(item.into());
        }
    }
    if visibility == Visibility::AvailableOnly {
        menu.retain(|c| !c.items.is_empty());
    }
    Ok(menu)
}

/// Turns free text into a prefix tsquery (`word:* & word:*`); only letters and digits
/// reach the query syntax.
fn search_query(text: &str) -> Result<String, AppError> {
    if text.chars().count() > 200 {
        return Err(AppError::bad_input("search text must be at most 200 characters"));
    }
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(8)
        .map(|w| format!("{}:*", w.to_lowercase()))
        .collect();
    if words.is_empty() {
        return Err(AppError::bad_input("search text must contain at least one letter or digit"));
    }
    Ok(words.join(" & "))
}

/// Full-text search over item names and descriptions within the transaction's venue.
pub async fn search(tx: &mut VenueTx, text: &str, visibility: Visibility) -> Result<Vec<Item>, AppError> {
    let query = search_query(text)?;
    let rows: Vec<ItemRow> = sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM menu_items \
         WHERE venue_id = $1 AND (available OR $2) AND search @@ to_tsquery('simple', $3) \
         ORDER BY ts_rank(search, to_tsquery('simple', $3)) DESC, name LIMIT 50"
    ))
    .bind(tx.venue().as_uuid())
    .bind(visibility == Visibility::All)
    .bind(&query)
    .fetch_all(tx.conn())
    .await?;
    Ok(rows.into_iter().map(Item::from).collect())
}

/// One item of the transaction's venue (None for unknown ids and other venues' items).
pub async fn item(tx: &mut VenueTx, id: Uuid, visibility: Visibility) -> Result<Option<Item>, AppError> {
    let row: Option<ItemRow> = sqlx::query_as(&format!(
        "SELECT {ITEM_COLUMNS} FROM menu_items WHERE venue_id = $1 AND id = $2 AND (available OR $3)"
    ))
    .bind(tx.venue().as_uuid())
    .bind(id)
    .bind(visibility == Visibility::All)
    .fetch_optional(tx.conn())
    .await?;
    Ok(row.map(Item::from))
}

fn check_name(name: &str) -> Result<String, AppError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 {
        return Err(AppError::bad_input("name must be 1 to 200 characters"));
    }
    Ok(name.to_string())
}

fn check_price(price_minor: i64) -> Result<i64, AppError> {
    if !(0..=MAX_PRICE_MINOR).contains(&price_minor) {
        return Err(AppError::bad_input(format!("priceMinor must be between 0 and {MAX_PRICE_MINOR} (minor units)")));
    }
    Ok(price_minor)
}

fn check_description(description: &str) -> Result<String, AppError> {
    if description.chars().count() > 2000 {
        return Err(AppError::bad_input("description must be at most 2000 characters"));
    }
    Ok(description.trim().to_string())
}

fn json(value: &impl Serialize) -> Result<serde_json::Value, AppError> {
    serde_json::to_value(value).map_err(AppError::internal)
}

async fn audit_change<T: Serialize>(
    tx: &mut VenueTx,
    who: &Who,
    action: &str,
    target_type: &str,
    id: Uuid,
    before: Option<&T>,
    after: Option<&T>,
) -> Result<(), AppError> {
    let before = before.map(json).transpose()?;
    let after = after.map(json).transpose()?;
    audit::record(tx, who, Change { action, target_type, target_id: id.to_string(), before, after }).await
}

/// Fields of a category; `None` keeps the current value on update.
#[derive(Clone, Debug, Default)]
pub struct CategoryFields {
    /// Display name.
    pub name: Option<String>,
    /// Display order.
    pub position: Option<i32>,
}

async fn category_for_update(tx: &mut VenueTx, id: Uuid) -> Result<Category, AppError> {
    sqlx::query_as("SELECT id, name, position FROM menu_categories WHERE venue_id = $1 AND id = $2 FOR UPDATE")
        .bind(tx.venue().as_uuid())
        .bind(id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or(AppError::NotFound("menu category"))
}

/// Creates a category.
pub async fn create_category(tx: &mut VenueTx, who: &Who, fields: CategoryFields) -> Result<Category, AppError> {
    let name = check_name(fields.name.as_deref().unwrap_or_default())?;
    let created: Category = sqlx::query_as(
        "INSERT INTO menu_categories (venue_id, name, position) VALUES ($1, $2, $3) RETURNING id, name, position",
    )
    .bind(tx.venue().as_uuid())
    .bind(&name)
    .bind(fields.position.unwrap_or(0))
    .fetch_one(tx.conn())
    .await?;
    audit_change(tx, who, "menu_category.created", "menu_category", created.id, None, Some(&created)).await?;
    Ok(created)
}

/// Changes a category's name or position.
pub async fn update_category(
    tx: &mut VenueTx,
    who: &Who,
    id: Uuid,
    fields: CategoryFields,
) -> Result<Category, AppError> {
    let before = category_for_update(tx, id).await?;
    let name = match fields.name {
        Some(name) => check_name(&name)?,
        None => before.name.clone(),
    };
    let after: Category = sqlx::query_as(
        "UPDATE menu_categories SET name = $3, position = $4 WHERE venue_id = $1 AND id = $2 RETURNING id, name, position",
    )
    .bind(tx.venue().as_uuid())
    .bind(id)
    .bind(&name)
    .bind(fields.position.unwrap_or(before.position))
    .fetch_one(tx.conn())
    .await?;
    audit_change(tx, who, "menu_category.updated", "menu_category", id, Some(&before), Some(&after)).await?;
    Ok(after)
}

/// Deletes an empty category; one that still has items is refused with a clear message.
pub async fn delete_category(tx: &mut VenueTx, who: &Who, id: Uuid) -> Result<(), AppError> {
    let before = category_for_update(tx, id).await?;
    let items: i64 = sqlx::query_scalar("SELECT count(*) FROM menu_items WHERE venue_id = $1 AND category_id = $2")
        .bind(tx.venue().as_uuid())
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    if items > 0 {
        return Err(AppError::bad_input(format!("menu category still has {items} item(s): move or delete them first")));
    }
    sqlx::query("DELETE FROM menu_categories WHERE venue_id = $1 AND id = $2")
        .bind(tx.venue().as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await?;
    audit_change(tx, who, "menu_category.deleted", "menu_category", id, Some(&before), None).await
}

/// Fields of an item; `None` keeps the current value on update (and takes the default on
/// creation, where `category_id`, `name` and `price_minor` are required).
#[derive(Clone, Debug, Default)]
pub struct ItemFields {
    /// Category (of the same venue).
    pub category_id: Option<Uuid>,
    /// Display name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Price in minor units.
    pub price_minor: Option<i64>,
    /// Declared allergens.
    pub allergens: Option<Vec<Allergen>>,
    /// Whether diners can order it.
    pub available: Option<bool>,
    /// Display order.
    pub position: Option<i32>,
}

fn allergen_names(allergens: &[Allergen]) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = allergens.iter().map(|a| a.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names
}

async fn item_for_update(tx: &mut VenueTx, id: Uuid) -> Result<Item, AppError> {
    let row: Option<ItemRow> =
        sqlx::query_as(&format!("SELECT {ITEM_COLUMNS} FROM menu_items WHERE venue_id = $1 AND id = $2 FOR UPDATE"))
            .bind(tx.venue().as_uuid())
            .bind(id)
            .fetch_optional(tx.conn())
            .await?;
    row.map(Item::from).ok_or(AppError::NotFound("menu item"))
}

/// Writes a complete item row (insert when `id` is None).
async fn write_item(tx: &mut VenueTx, id: Option<Uuid>, item: &Item) -> Result<Item, AppError> {
    let sql = match id {
        None => format!(
            "INSERT INTO menu_items (venue_id, category_id, name, description, price_minor, currency, allergens, available, position) \
             SELECT $1, $2, $3, $4, $5, v.currency, $6, $7, $8 FROM venues v WHERE v.id = $1 RETURNING {ITEM_COLUMNS}"
        ),
        Some(_) => format!(
            "UPDATE menu_items SET category_id = $2, name = $3, description = $4, price_minor = $5, allergens = $6, \
             available = $7, position = $8, updated_at = now() WHERE venue_id = $1 AND id = $9 RETURNING {ITEM_COLUMNS}"
        ),
    };
    let row: ItemRow = sqlx::query_as(&sql)
        .bind(tx.venue().as_uuid())
        .bind(item.category_id)
        .bind(&item.name)
        .bind(&item.description)
        .bind(item.price_minor)
        .bind(allergen_names(&item.allergens))
        .bind(item.available)
        .bind(item.position)
        .bind(id)
        .fetch_one(tx.conn())
        .await?;
    Ok(row.into())
}

/// Creates an item in a category of the same venue, priced in the venue's currency.
pub async fn create_item(tx: &mut VenueTx, who: &Who, fields: ItemFields) -> Result<Item, AppError> {
    let item = Item {
        id: Uuid::nil(),
        category_id: fields.category_id.ok_or_else(|| AppError::bad_input("categoryId is required"))?,
        name: check_name(fields.name.as_deref().unwrap_or_default())?,
        description: check_description(fields.description.as_deref().unwrap_or_default())?,
        price_minor: check_price(fields.price_minor.ok_or_else(|| AppError::bad_input("priceMinor is required"))?)?,
        currency: String::new(),
        allergens: fields.allergens.unwrap_or_default(),
        available: fields.available.unwrap_or(true),
        position: fields.position.unwrap_or(0),
    };
    let created = write_item(tx, None, &item).await?;
    audit_change(tx, who, "menu_item.created", "menu_item", created.id, None, Some(&created)).await?;
    Ok(created)
}

/// Changes an item; fields left `None` keep their value.
pub async fn update_item(tx: &mut VenueTx, who: &Who, id: Uuid, fields: ItemFields) -> Result<Item, AppError> {
    let before = item_for_update(tx, id).await?;
    let wanted = Item {
        id,
        category_id: fields.category_id.unwrap_or(before.category_id),
        name: fields.name.as_deref().map(check_name).transpose()?.unwrap_or_else(|| before.name.clone()),
        description: fields
            .description
            .as_deref()
            .map(check_description)
            .transpose()?
            .unwrap_or_else(|| before.description.clone()),
        price_minor: fields.price_minor.map(check_price).transpose()?.unwrap_or(before.price_minor),
        currency: before.currency.clone(),
        allergens: fields.allergens.unwrap_or_else(|| before.allergens.clone()),
        available: fields.available.unwrap_or(before.available),
        position: fields.position.unwrap_or(before.position),
    };
    let after = write_item(tx, Some(id), &wanted).await?;
    audit_change(tx, who, "menu_item.updated", "menu_item", id, Some(&before), Some(&after)).await?;
    Ok(after)
}

/// Deletes an item.
pub async fn delete_item(tx: &mut VenueTx, who: &Who, id: Uuid) -> Result<(), AppError> {
    let before = item_for_update(tx, id).await?;
    sqlx::query("DELETE FROM menu_items WHERE venue_id = $1 AND id = $2")
        .bind(tx.venue().as_uuid())
        .bind(id)
        .execute(tx.conn())
        .await?;
    audit_change(tx, who, "menu_item.deleted", "menu_item", id, Some(&before), None).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_text_becomes_prefix_terms_of_letters_and_digits_only() {
        assert_eq!(search_query("Flat white").unwrap(), "flat:* & white:*");
        assert_eq!(search_query("x' | !y:*").unwrap(), "x:* & y:*");
        assert!(search_query("  &|! ").is_err());
        assert!(search_query(&"a".repeat(201)).is_err());
    }

    #[test]
    fn every_allergen_round_trips_through_its_stored_name() {
        for allergen in Allergen::ALL {
            assert_eq!(Allergen::from_stored(allergen.as_str()), Some(allergen));
        }
    }
}

/// An available menu item as a checkout prices it.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct PricedItem {
    /// Item id.
    pub id: Uuid,
    /// Name now.
    pub name: String,
    /// Price now, minor units.
    pub price_minor: i64,
    /// ISO 4217.
    pub currency: String,
    /// Declared allergens (stored names).
    pub allergens: Vec<String>,
}

/// The available items among `ids` at the transaction's venue, for pricing a checkout
/// (unavailable and unknown ids are simply absent).
pub async fn available_items(tx: &mut VenueTx, ids: &[Uuid]) -> Result<Vec<PricedItem>, AppError> {
    Ok(sqlx::query_as(
        "SELECT id, name, price_minor, currency, allergens FROM menu_items WHERE id = ANY($1) AND available",
    )
    .bind(ids)
    .fetch_all(tx.conn())
    .await?)
}
