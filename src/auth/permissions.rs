//! The 64-bit permission set a staff member or token holds at one venue (SPEC §3).

use bitflags::bitflags;

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
    }
}

impl Permissions {
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
    fn database_round_trip_drops_unknown_bits() {
        let all = Permissions::all();
        assert_eq!(Permissions::from_db(all.to_db()), all);
        assert_eq!(Permissions::from_db(-1), all);
        assert_eq!(all.names().len(), 14);
    }
}
