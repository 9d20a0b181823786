//! Who may do what: the 64-bit permission set a staff member or token holds at one venue
//! (SPEC §3), and the authenticated caller behind a request. The vocabulary every room
//! shares; `auth` verifies credentials into a [`Caller`], the GraphQL kernel's guards
//! check [`Permissions`].

use bitflags::bitflags;
use uuid::Uuid;

use crate::tenancy::VenueId;

bitflags! {
    /// Named permission bits; stored as `bigint` in the database.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Permissions: u64 {
        /// See and advance the live orders queue.
        const ORDERS_QUEUE = 1 << 0;
        /// See past orders and revenue.
        const ORDERS_HISTORY = 1 << 1;
        /// Refund orders.
        const ORDERS_REFUND = 1 << 2;
        /// Read the full menu, including unavailable items.
        const MENU_VIEW = 1 << 3;
        /// Create, change and delete menu categories and items.
        const MENU_EDIT = 1 << 4;
        /// See diners.
        const DINERS_VIEW = 1 << 5;
        /// See diners' allergens and dietary notes.
        const DINER_ALLERGENS_VIEW = 1 << 6;
        /// See the venue's staff.
        const STAFF_VIEW = 1 << 7;
        /// Add, change and remove staff.
        const STAFF_MANAGE = 1 << 8;
        /// See payment settings and payouts.
        const PAYMENTS_VIEW = 1 << 9;
        /// Change payment settings (Stripe onboarding).
        const PAYMENTS_MANAGE = 1 << 10;
        /// Change venue settings.
        const VENUE_SETTINGS = 1 << 11;
        /// Read the audit log.
        const AUDIT_VIEW = 1 << 12;
        /// Create and revoke API clients and tokens.
        const API_CLIENTS_MANAGE = 1 << 13;
        /// Export and erase diners' data (data-subject requests).
        const DINERS_MANAGE = 1 << 14;
    }
}

/// A permission bit as a GraphQL enum (same names as [`Permissions`]).
#[derive(async_graphql::Enum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// See and advance the live orders queue.
    OrdersQueue,
    /// See past orders and revenue.
    OrdersHistory,
    /// Refund orders.
    OrdersRefund,
    /// Read the full menu.
    MenuView,
    /// Change the menu.
    MenuEdit,
    /// See diners.
    DinersView,
    /// See diners' allergens and dietary notes.
    DinerAllergensView,
    /// See the venue's staff.
    StaffView,
    /// Add, change and remove staff.
    StaffManage,
    /// See payment settings and payouts.
    PaymentsView,
    /// Change payment settings.
    PaymentsManage,
    /// Change venue settings.
    VenueSettings,
    /// Read the audit log.
    AuditView,
    /// Create and revoke API clients.
    ApiClientsManage,
    /// Export and erase diners' data.
    DinersManage,
}

impl Permission {
    const ALL: [(Permission, Permissions); 15] = [
        (Permission::OrdersQueue, Permissions::ORDERS_QUEUE),
        (Permission::OrdersHistory, Permissions::ORDERS_HISTORY),
        (Permission::OrdersRefund, Permissions::ORDERS_REFUND),
        (Permission::MenuView, Permissions::MENU_VIEW),
        (Permission::MenuEdit, Permissions::MENU_EDIT),
        (Permission::DinersView, Permissions::DINERS_VIEW),
        (Permission::DinerAllergensView, Permissions::DINER_ALLERGENS_VIEW),
        (Permission::StaffView, Permissions::STAFF_VIEW),
        (Permission::StaffManage, Permissions::STAFF_MANAGE),
        (Permission::PaymentsView, Permissions::PAYMENTS_VIEW),
        (Permission::PaymentsManage, Permissions::PAYMENTS_MANAGE),
        (Permission::VenueSettings, Permissions::VENUE_SETTINGS),
        (Permission::AuditView, Permissions::AUDIT_VIEW),
        (Permission::ApiClientsManage, Permissions::API_CLIENTS_MANAGE),
        (Permission::DinersManage, Permissions::DINERS_MANAGE),
    ];

    /// The set of bits a list of enum values names.
    pub fn set(list: &[Permission]) -> Permissions {
        Permission::ALL.iter().filter(|(p, _)| list.contains(p)).fold(Permissions::empty(), |acc, (_, bit)| acc | *bit)
    }

    /// The enum values of a set of bits, in declaration order.
    pub fn list(set: Permissions) -> Vec<Permission> {
        Permission::ALL.iter().filter(|(_, bit)| set.contains(*bit)).map(|(p, _)| *p).collect()
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
