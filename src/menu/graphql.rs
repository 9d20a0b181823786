//! GraphQL surface of the menu: staff query and mutations (`/graphql`) and the diner's
//! public menu (`/v/{slug}/graphql`). Resolvers are a few lines calling `menu::*`.

use async_graphql::{Context, ID, InputObject, Object, Result, SimpleObject};

use super::{Allergen, CategoryFields, CategoryWithItems, Item, ItemFields, Visibility};
use crate::access::Permissions;
use crate::graphql::context::{commit, public_tx, staff_tx};
use crate::graphql::parse_id;
use crate::graphql::permission_guard::Requires;

/// A dish or drink.
#[derive(SimpleObject, Clone)]
pub struct MenuItem {
    /// Item id.
    id: ID,
    /// Category id.
    category_id: ID,
    /// Name.
    name: String,
    /// Description (may be empty).
    description: String,
    /// Price in minor units of `currency` (e.g. cents).
    price_minor: i32,
    /// ISO 4217 currency code.
    currency: String,
    /// Declared allergens (EU Regulation 1169/2011, Annex II).
    allergens: Vec<Allergen>,
    /// Whether diners can order it now.
    available: bool,
    /// Display order within the category.
    position: i32,
}

impl From<Item> for MenuItem {
    fn from(item: Item) -> MenuItem {
        MenuItem {
            id: item.id.into(),
            category_id: item.category_id.into(),
            name: item.name,
            description: item.description,
            // Bounded by MAX_PRICE_MINOR (checked on write), well inside i32.
            price_minor: i32::try_from(item.price_minor).unwrap_or(i32::MAX),
            currency: item.currency,
            allergens: item.allergens,
            available: item.available,
            position: item.position,
        }
    }
}

/// A section of the menu with its items.
#[derive(SimpleObject, Clone)]
pub struct MenuCategory {
    /// Category id.
    id: ID,
    /// Name.
    name: String,
    /// Display order.
    position: i32,
    /// Items in display order.
    items: Vec<MenuItem>,
}

impl From<CategoryWithItems> for MenuCategory {
    fn from(entry: CategoryWithItems) -> MenuCategory {
        MenuCategory {
            id: entry.category.id.into(),
            name: entry.category.name,
            position: entry.category.position,
            items: entry.items.into_iter().map(MenuItem::from).collect(),
        }
    }
}

impl From<super::Category> for MenuCategory {
    fn from(category: super::Category) -> MenuCategory {
        MenuCategory::from(CategoryWithItems { category, items: Vec::new() })
    }
}

/// A venue's menu.
#[derive(SimpleObject)]
pub struct Menu {
    /// Categories in display order.
    categories: Vec<MenuCategory>,
}

fn menu_of(entries: Vec<CategoryWithItems>) -> Menu {
    Menu { categories: entries.into_iter().map(MenuCategory::from).collect() }
}

fn items(list: Vec<Item>) -> Vec<MenuItem> {
    list.into_iter().map(MenuItem::from).collect()
}

/// Staff menu queries.
#[derive(Default)]
pub struct MenuQuery;

#[Object]
impl MenuQuery {
    /// The venue's full menu, including unavailable items. Requires MENU_VIEW.
    #[graphql(guard = "Requires(Permissions::MENU_VIEW)")]
    async fn menu(&self, ctx: &Context<'_>) -> Result<Menu> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let menu = super::load(&mut tx, Visibility::All).await?;
        commit(tx).await?;
        Ok(menu_of(menu))
    }

    /// One menu item of the venue, or null. Requires MENU_VIEW.
    #[graphql(guard = "Requires(Permissions::MENU_VIEW)")]
    async fn menu_item(&self, ctx: &Context<'_>, id: ID) -> Result<Option<MenuItem>> {
        let id = parse_id(&id, "id")?;
        let (_, mut tx) = staff_tx(ctx).await?;
        let item = super::item(&mut tx, id, Visibility::All).await?;
        commit(tx).await?;
        Ok(item.map(MenuItem::from))
    }

    /// The venue's tax rates, by name. Requires MENU_VIEW.
    #[graphql(guard = "Requires(Permissions::MENU_VIEW)")]
    async fn tax_rates(&self, ctx: &Context<'_>) -> Result<Vec<TaxRate>> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let rates = super::taxes::list(&mut tx).await?;
        commit(tx).await?;
        Ok(rates.into_iter().map(TaxRate::from).collect())
    }

    /// Full-text search over item names and descriptions (prefix match, every word must
    /// match), best match first, at most 50. Requires MENU_VIEW.
    #[graphql(guard = "Requires(Permissions::MENU_VIEW)")]
    async fn search_menu(&self, ctx: &Context<'_>, text: String) -> Result<Vec<MenuItem>> {
        let (_, mut tx) = staff_tx(ctx).await?;
        let found = super::search(&mut tx, &text, Visibility::All).await?;
        commit(tx).await?;
        Ok(items(found))
    }
}

/// A tax rate of the venue.
#[derive(SimpleObject)]
pub struct TaxRate {
    /// Its id.
    id: ID,
    /// Its name on receipts ("VAT 20%").
    name: String,
    /// The rate in parts per million (20% is 200000, 8.875% is 88750).
    rate_ppm: i32,
}

impl From<super::taxes::TaxRate> for TaxRate {
    fn from(rate: super::taxes::TaxRate) -> TaxRate {
        TaxRate { id: rate.id.into(), name: rate.name, rate_ppm: rate.rate_ppm }
    }
}

/// Input of `createTaxRate` (both fields required) and `updateTaxRate` (fields left out
/// stay as they are).
#[derive(InputObject)]
pub struct TaxRateInput {
    /// The name on receipts, 1 to 80 characters, unique at the venue.
    name: Option<String>,
    /// Parts per million, 0 to 1000000.
    rate_ppm: Option<i32>,
}

impl From<TaxRateInput> for super::taxes::TaxRateFields {
    fn from(input: TaxRateInput) -> super::taxes::TaxRateFields {
        super::taxes::TaxRateFields { name: input.name, rate_ppm: input.rate_ppm }
    }
}

/// Input of `createMenuCategory`.
#[derive(InputObject)]
pub struct CreateMenuCategoryInput {
    /// Name, 1-200 characters, unique within the venue.
    name: String,
    /// Display order (default 0).
    position: Option<i32>,
}

/// Input of `updateMenuCategory`; omitted fields keep their value.
#[derive(InputObject)]
pub struct UpdateMenuCategoryInput {
    /// New name.
    name: Option<String>,
    /// New display order.
    position: Option<i32>,
}

/// Input of `createMenuItem`.
#[derive(InputObject)]
pub struct CreateMenuItemInput {
    /// Category of this venue.
    category_id: ID,
    /// Name, 1-200 characters.
    name: String,
    /// Description, at most 2000 characters.
    description: Option<String>,
    /// Price in minor units of the venue's currency, 0 to 100000000.
    price_minor: i32,
    /// Declared allergens.
    #[graphql(default)]
    allergens: Vec<Allergen>,
    /// Whether diners can order it (default true).
    available: Option<bool>,
    /// Display order (default 0).
    position: Option<i32>,
}

/// Input of `updateMenuItem`; omitted fields keep their value.
#[derive(InputObject)]
pub struct UpdateMenuItemInput {
    /// New category (of this venue).
    category_id: Option<ID>,
    /// New name.
    name: Option<String>,
    /// New description.
    description: Option<String>,
    /// New price in minor units.
    price_minor: Option<i32>,
    /// New allergen list (replaces the old one).
    allergens: Option<Vec<Allergen>>,
    /// New availability.
    available: Option<bool>,
    /// New display order.
    position: Option<i32>,
}

/// Staff menu mutations; each writes an audit event in the same transaction.
#[derive(Default)]
pub struct MenuMutation;

#[Object]
impl MenuMutation {
    /// Creates a menu category. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn create_menu_category(&self, ctx: &Context<'_>, input: CreateMenuCategoryInput) -> Result<MenuCategory> {
        let (staff, mut tx) = staff_tx(ctx).await?;
        let fields = CategoryFields { name: Some(input.name), position: input.position };
        let created = super::create_category(&mut tx, &staff.who(), fields).await?;
        commit(tx).await?;
        Ok(created.into())
    }

    /// Renames or reorders a menu category. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn update_menu_category(
        &self,
        ctx: &Context<'_>,
        id: ID,
        input: UpdateMenuCategoryInput,
    ) -> Result<MenuCategory> {
        let id = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        let fields = CategoryFields { name: input.name, position: input.position };
        let updated = super::update_category(&mut tx, &staff.who(), id, fields).await?;
        commit(tx).await?;
        Ok(updated.into())
    }

    /// Deletes an empty menu category and returns its id. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn delete_menu_category(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let uuid = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        super::delete_category(&mut tx, &staff.who(), uuid).await?;
        commit(tx).await?;
        Ok(id)
    }

    /// Creates a tax rate (`ratePpm` in parts per million: 20% is 200000, 8.875% is
    /// 88750). Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn create_tax_rate(&self, ctx: &Context<'_>, input: TaxRateInput) -> Result<TaxRate> {
        let (staff, mut tx) = staff_tx(ctx).await?;
        let created = super::taxes::create(&mut tx, &staff.who(), input.into()).await?;
        commit(tx).await?;
        Ok(created.into())
    }

    /// Renames a tax rate or changes it (fields left out stay). Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn update_tax_rate(&self, ctx: &Context<'_>, id: ID, input: TaxRateInput) -> Result<TaxRate> {
        let id = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        let updated = super::taxes::update(&mut tx, &staff.who(), id, input.into()).await?;
        commit(tx).await?;
        Ok(updated.into())
    }

    /// Deletes a tax rate and returns its id. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn delete_tax_rate(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let uuid = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        super::taxes::delete(&mut tx, &staff.who(), uuid).await?;
        commit(tx).await?;
        Ok(id)
    }

    /// Creates a menu item priced in the venue's currency. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn create_menu_item(&self, ctx: &Context<'_>, input: CreateMenuItemInput) -> Result<MenuItem> {
        let fields = ItemFields {
            category_id: Some(parse_id(&input.category_id, "categoryId")?),
            name: Some(input.name),
            description: input.description,
            price_minor: Some(i64::from(input.price_minor)),
            allergens: Some(input.allergens),
            available: input.available,
            position: input.position,
        };
        let (staff, mut tx) = staff_tx(ctx).await?;
        let created = super::create_item(&mut tx, &staff.who(), fields).await?;
        commit(tx).await?;
        Ok(created.into())
    }

    /// Changes a menu item. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn update_menu_item(&self, ctx: &Context<'_>, id: ID, input: UpdateMenuItemInput) -> Result<MenuItem> {
        let id = parse_id(&id, "id")?;
        let fields = ItemFields {
            category_id: input.category_id.as_ref().map(|c| parse_id(c, "categoryId")).transpose()?,
            name: input.name,
            description: input.description,
            price_minor: input.price_minor.map(i64::from),
            allergens: input.allergens,
            available: input.available,
            position: input.position,
        };
        let (staff, mut tx) = staff_tx(ctx).await?;
        let updated = super::update_item(&mut tx, &staff.who(), id, fields).await?;
        commit(tx).await?;
        Ok(updated.into())
    }

    /// Deletes a menu item and returns its id. Requires MENU_EDIT.
    #[graphql(guard = "Requires(Permissions::MENU_EDIT)")]
    async fn delete_menu_item(&self, ctx: &Context<'_>, id: ID) -> Result<ID> {
        let uuid = parse_id(&id, "id")?;
        let (staff, mut tx) = staff_tx(ctx).await?;
        super::delete_item(&mut tx, &staff.who(), uuid).await?;
        commit(tx).await?;
        Ok(id)
    }
}

/// The diner's public queries.
#[derive(Default)]
pub struct PublicMenuQuery;

#[Object]
impl PublicMenuQuery {
    /// The public menu: available items only, in categories that have one.
    async fn menu(&self, ctx: &Context<'_>) -> Result<Menu> {
        let mut tx = public_tx(ctx).await?;
        let menu = super::load(&mut tx, Visibility::AvailableOnly).await?;
        commit(tx).await?;
        Ok(menu_of(menu))
    }

    /// Full-text search over the available items, best match first, at most 50.
    async fn search_menu(&self, ctx: &Context<'_>, text: String) -> Result<Vec<MenuItem>> {
        let mut tx = public_tx(ctx).await?;
        let found = super::search(&mut tx, &text, Visibility::AvailableOnly).await?;
        commit(tx).await?;
        Ok(items(found))
    }
}
