//! Who may do what: the 64-bit permission set a staff member or token holds at one venue
//! (SPEC §3), and the authenticated caller behind a request. The vocabulary every room
//! shares; `auth` verifies credentials into a [`Caller`], the GraphQL kernel's guards
//! check [`Permissions`].
//!
//! Every permission is declared once, in the table of [`declare_permissions!`]: its bit,
//! its name (the bitflag, and the GraphQL enum value in the same spelling), what it
//! allows (the doc comment: Rust docs and the schema's description alike) and whether it
//! is elevated (needs MFA where the venue requires it). The bitflags, the GraphQL enum,
//! [`PERMISSION_TABLE`] and [`ELEVATED`] all come from it.

use bitflags::bitflags;
use uuid::Uuid;

use crate::tenancy::VenueId;

/// One row of the permission table.
#[derive(Clone, Copy, Debug)]
pub struct PermissionEntry {
    /// The GraphQL enum value.
    pub permission: Permission,
    /// The bit.
    pub bit: Permissions,
    /// The name (`ORDERS_QUEUE`), as stored in audit rows and shown in scopes.
    pub name: &'static str,
    /// Whether a venue that requires MFA for elevated permissions gives it only to
    /// sessions that proved a second factor.
    pub elevated: bool,
}

/// Declares the permissions: `NAME = bit, EnumVariant, elevated;`, each with its doc
/// comment. The one place a permission is added.
macro_rules! declare_permissions {
    ($( $(#[doc = $doc:literal])+ $name:ident = $bit:literal, $variant:ident, elevated: $elevated:literal; )+) => {
        bitflags! {
            /// Named permission bits; stored as `bigint` in the database.
            #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
            pub struct Permissions: u64 {
                $( $(#[doc = $doc])+ const $name = 1 << $bit; )+
            }
        }

        /// A permission bit as a GraphQL enum (same names as [`Permissions`]).
        #[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Permission {
            $( $(#[doc = $doc])+ $variant, )+
        }

        /// Every permission, in declaration order.
        pub const PERMISSION_TABLE: &[PermissionEntry] = &[
            $( PermissionEntry {
                permission: Permission::$variant,
                bit: Permissions::$name,
                name: stringify!($name),
                elevated: $elevated,
            }, )+
        ];
    };
}

declare_permissions! {
    /// See and advance the live orders queue.
    ORDERS_QUEUE = 0, OrdersQueue, elevated: false;
    /// See past orders and revenue.
    ORDERS_HISTORY = 1, OrdersHistory, elevated: false;
    /// Refund orders.
    ORDERS_REFUND = 2, OrdersRefund, elevated: true;
    /// Read the full menu, including unavailable items.
    MENU_VIEW = 3, MenuView, elevated: false;
    /// Create, change and delete menu categories and items.
    MENU_EDIT = 4, MenuEdit, elevated: false;
    /// See diners.
    DINERS_VIEW = 5, DinersView, elevated: false;
    /// See diners' allergens and dietary notes.
    DINER_ALLERGENS_VIEW = 6, DinerAllergensView, elevated: false;
    /// See the venue's staff.
    STAFF_VIEW = 7, StaffView, elevated: false;
    /// Add, change and remove staff.
    STAFF_MANAGE = 8, StaffManage, elevated: true;
    /// See payment settings and payouts.
    PAYMENTS_VIEW = 9, PaymentsView, elevated: false;
    /// Change payment settings (Stripe onboarding).
    PAYMENTS_MANAGE = 10, PaymentsManage, elevated: true;
    /// Change venue settings.
    VENUE_SETTINGS = 11, VenueSettings, elevated: true;
    /// Read the audit log.
    AUDIT_VIEW = 12, AuditView, elevated: false;
    /// Create and revoke API clients and tokens.
    API_CLIENTS_MANAGE = 13, ApiClientsManage, elevated: true;
    /// Export and erase diners' data (data-subject requests).
    DINERS_MANAGE = 14, DinersManage, elevated: false;
}

/// The permissions a venue can insist be held only with MFA (the table's elevated rows).
pub const ELEVATED: Permissions = {
    let mut bits = 0u64;
    let mut row = 0;
    while row < PERMISSION_TABLE.len() {
        if PERMISSION_TABLE[row].elevated {
            bits |= PERMISSION_TABLE[row].bit.bits();
        }
        row += 1;
    }
    Permissions::from_bits_retain(bits)
};

impl Permission {
    /// The set of bits a list of enum values names.
    pub fn set(list: &[Permission]) -> Permissions {
        PERMISSION_TABLE
            .iter()
            .filter(|e| list.contains(&e.permission))
            .fold(Permissions::empty(), |acc, e| acc | e.bit)
    }

    /// The enum values of a set of bits, in declaration order.
    pub fn list(set: Permissions) -> Vec<Permission> {
        PERMISSION_TABLE.iter().filter(|e| set.contains(e.bit)).map(|e| e.permission).collect()
    }
}

impl Permissions {
    /// Refuses a change to `target` that would add or remove bits the caller does not
    /// hold: nobody grants (or takes away) what they do not have themselves.
    pub fn check_grantable(caller: Permissions, before: Permissions, after: Permissions) -> Result<(), String> {
        let changed = before.symmetric_difference(after);
        let beyond = changed.difference(caller);
        if beyond.is_empty() {
            Ok(())
        } else {
            Err(format!("you cannot grant or remove permissions you do not hold: {}", beyond.names().join(", ")))
        }
    }

    /// Parses a comma-separated list of names (`MENU_VIEW,MENU_EDIT`, or `ALL`).
    pub fn parse_list(list: &str) -> Result<Permissions, String> {
        let mut permissions = Permissions::empty();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if name.eq_ignore_ascii_case("ALL") {
                permissions |= Permissions::all();
                continue;
            }
            let flag = Permissions::from_name(&name.to_ascii_uppercase()).ok_or_else(|| {
                let known: Vec<&str> = Permissions::all().iter_names().map(|(n, _)| n).collect();
                format!("unknown permission {name:?}; known: {}", known.join(", "))
            })?;
            permissions |= flag;
        }
        Ok(permissions)
    }

    /// The names of the bits set, in declaration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.iter_names().map(|(name, _)| name).collect()
    }

    /// The value stored in the database.
    pub fn to_db(self) -> i64 {
        self.bits() as i64
    }

    /// Reads a stored value; unknown bits are dropped, never granted.
    pub fn from_db(bits: i64) -> Permissions {
        Permissions::from_bits_truncate(bits as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_all() {
        assert_eq!(
            Permissions::parse_list("MENU_VIEW, menu_edit").unwrap(),
            Permissions::MENU_VIEW | Permissions::MENU_EDIT
        );
        assert_eq!(Permissions::parse_list("ALL").unwrap(), Permissions::all());
        assert_eq!(Permissions::parse_list("").unwrap(), Permissions::empty());
    }

    #[test]
    fn unknown_name_is_refused_with_the_known_list() {
        let error = Permissions::parse_list("MENU_VIEW,ROOT").unwrap_err();
        assert!(error.contains("\"ROOT\"") && error.contains("ORDERS_QUEUE"), "{error}");
    }

    #[test]
    fn only_held_bits_can_be_granted_or_removed() {
        let manager = Permissions::STAFF_MANAGE | Permissions::MENU_VIEW;
        let none = Permissions::empty();
        assert!(Permissions::check_grantable(manager, none, Permissions::MENU_VIEW).is_ok());
        let error = Permissions::check_grantable(manager, none, Permissions::PAYMENTS_MANAGE).unwrap_err();
        assert!(error.contains("PAYMENTS_MANAGE"), "{error}");
        assert!(Permissions::check_grantable(manager, Permissions::PAYMENTS_MANAGE, none).is_err());
        assert!(
            Permissions::check_grantable(
                manager,
                Permissions::PAYMENTS_MANAGE,
                Permissions::PAYMENTS_MANAGE | Permissions::MENU_VIEW
            )
            .is_ok()
        );
        assert_eq!(Permission::set(&Permission::list(Permissions::all())), Permissions::all());
    }

    #[test]
    fn every_bit_has_exactly_one_row_in_the_table_and_no_two_rows_share_a_bit() {
        let mut seen = Permissions::empty();
        for entry in PERMISSION_TABLE {
            assert_eq!(entry.bit.bits().count_ones(), 1, "{} is one bit", entry.name);
            assert!(!seen.intersects(entry.bit), "{} shares its bit with another row", entry.name);
            seen |= entry.bit;
            assert_eq!(Permissions::from_name(entry.name), Some(entry.bit), "{}'s name is its flag's", entry.name);
            assert_eq!(Permission::set(&[entry.permission]), entry.bit);
        }
        assert_eq!(seen, Permissions::all(), "every bit has a row");
        assert_eq!(PERMISSION_TABLE.len(), Permissions::all().bits().count_ones() as usize);
        let elevated = PERMISSION_TABLE.iter().filter(|e| e.elevated).fold(Permissions::empty(), |a, e| a | e.bit);
        assert_eq!(ELEVATED, elevated);
        assert_eq!(
            ELEVATED.names(),
            ["ORDERS_REFUND", "STAFF_MANAGE", "PAYMENTS_MANAGE", "VENUE_SETTINGS", "API_CLIENTS_MANAGE"]
        );
    }

    #[test]
    fn database_round_trip_drops_unknown_bits() {
        let all = Permissions::all();
        assert_eq!(Permissions::from_db(all.to_db()), all);
        assert_eq!(Permissions::from_db(-1), all);
        assert_eq!(all.names().len(), 15);
    }
}

/// The authenticated caller behind a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A venue API token (integration bearer token).
    ApiToken(Uuid),
    /// A person, through an OAuth grant (hosted login or PIN).
    Staff {
        /// The person.
        staff_id: Uuid,
        /// The grant (session) the token belongs to.
        grant_id: Uuid,
    },
    /// An integration, through a client-credentials grant.
    Client {
        /// The OAuth client.
        client_id: String,
        /// The grant the token belongs to.
        grant_id: Uuid,
    },
}

impl Principal {
    /// The actor string written into audit rows.
    pub fn actor(&self) -> String {
        match self {
            Principal::ApiToken(id) => format!("api_token:{id}"),
            Principal::Staff { staff_id, .. } => staff_actor(*staff_id),
            Principal::Client { client_id, .. } => client_actor(client_id),
        }
    }

    /// The key a credential's rate limits are kept under: the API token, the session
    /// (every access token of one sign-in shares it), or the integration client.
    pub fn credential_key(&self) -> String {
        match self {
            Principal::ApiToken(id) => format!("api_token:{id}"),
            Principal::Staff { grant_id, .. } => format!("session:{grant_id}"),
            Principal::Client { client_id, .. } => client_actor(client_id),
        }
    }

    /// The person behind the request, if it is one.
    pub fn staff_id(&self) -> Option<Uuid> {
        match self {
            Principal::Staff { staff_id, .. } => Some(*staff_id),
            _ => None,
        }
    }
}

/// The audit actor of a person.
pub fn staff_actor(staff: Uuid) -> String {
    format!("staff:{staff}")
}

/// The audit actor of an OAuth client.
pub fn client_actor(client: &str) -> String {
    format!("oauth_client:{client}")
}

/// What a verified bearer credential proves: who, at which venue, allowed to do what.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The one venue the credential is bound to.
    pub venue: VenueId,
    /// Who is calling.
    pub principal: Principal,
    /// What they may do there now.
    pub permissions: Permissions,
    /// The OAuth client the token was issued to (None for a venue API token): a browser
    /// request from another origin must come from one of this client's origins.
    pub client_id: Option<String>,
}
