//! The structure checks itself, from the source text (no database, no build of the code
//! under test beyond this file):
//!
//! - **Rooms.** One table ([`ROOMS`]) says which top-level modules of the library each
//!   module may use. Every path a module's files use to reach another top-level module
//!   (read with `syn`: grouped and nested `use`, `pub use`, `crate::` paths in expressions
//!   and types, `super::` that climbs to the crate root, `crate::x` inside macro calls)
//!   must be an arrow of the table, there must be no cycle between modules, and a new
//!   module must be added to the table before it compiles into a green suite.
//! - **One owner per table.** Every table the migrations create has one owning module
//!   ([`TABLE_OWNERS`]). No other module writes it (`INSERT INTO`, `UPDATE`, `DELETE
//!   FROM`); another module reads it only where [`SHARED_READS`] says so, with the reason.
//! - **One way to read request services:** `graphql::context`, never `ctx.data` elsewhere.
//! - **No escape hatches.** A `VenueId` is made only by tenancy's named constructors, each
//!   from the rooms that read its trusted source ([`VENUE_ID_SOURCES`]); no module but
//!   `db`, `tenancy` and the wiring (`app`, `dev`) names a raw pool or takes a pooled
//!   connection.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which modules each module may use, from the bottom of the house up:
/// kernel (`error`, `observability`, `crypto`, `origins`, `db`, `tenancy`), the shared
/// vocabulary and services (`access`, `config`, `audit`, `keys`, `limits`, `mail`), the
/// GraphQL kernel (`graphql`), the features (`venues`, `menu`, `auth`, `staff`, `orders`,
/// `diners`, `payments`, `retention`), and the wiring above them (`schema`, `http`, `app`,
/// `admin`, `dev`). Payments depends on orders, never the reverse.
const ROOMS: &[(&str, &[&str])] = &[
    ("error", &[]),
    ("observability", &[]),
    ("db", &[]),
    ("tenancy", &[]),
    ("crypto", &["error"]),
    ("origins", &["error"]),
    ("access", &["tenancy"]),
    ("config", &["crypto"]),
    ("audit", &["config", "error", "tenancy"]),
    ("keys", &["audit", "crypto", "error", "tenancy"]),
    ("limits", &["config", "error", "tenancy"]),
    ("mail", &["config", "crypto", "error", "keys", "tenancy"]),
    ("graphql", &["access", "audit", "config", "error", "observability", "tenancy"]),
    ("venues", &["access", "audit", "error", "graphql", "origins", "tenancy"]),
    ("menu", &["access", "audit", "error", "graphql", "tenancy"]),
    ("audit_graphql", &["access", "audit", "error", "graphql"]),
    ("verify_isolation", &[]),
    (
        "auth",
        &["access", "audit", "config", "crypto", "error", "graphql", "keys", "mail", "origins", "tenancy", "venues"],
    ),
    ("staff", &["access", "audit", "auth", "config", "crypto", "error", "graphql", "mail", "tenancy", "venues"]),
    ("orders", &["access", "audit", "auth", "error", "graphql", "menu", "tenancy"]),
    (
        "diners",
        &[
            "access", "audit", "auth", "config", "crypto", "error", "graphql", "keys", "mail", "menu", "orders",
            "tenancy", "venues",
        ],
    ),
    (
        "payments",
        &[
            "access", "audit", "auth", "config", "crypto", "diners", "error", "graphql", "menu", "orders", "tenancy",
            "venues",
        ],
    ),
    ("retention", &["audit", "config", "diners", "error", "orders", "payments", "tenancy"]),
    (
        "schema",
        &[
            "audit_graphql",
            "auth",
            "config",
            "crypto",
            "diners",
            "graphql",
            "menu",
            "observability",
            "orders",
            "payments",
            "staff",
            "tenancy",
            "venues",
        ],
    ),
    (
        "http",
        &[
            "access",
            "audit",
            "auth",
            "config",
            "db",
            "error",
            "graphql",
            "limits",
            "observability",
            "orders",
            "payments",
            "schema",
            "staff",
            "tenancy",
            "venues",
        ],
    ),
    (
        "app",
        &[
            "audit",
            "auth",
            "config",
            "crypto",
            "db",
            "http",
            "limits",
            "mail",
            "observability",
            "orders",
            "payments",
            "retention",
            "schema",
            "tenancy",
        ],
    ),
    ("admin", &["access", "audit", "auth", "crypto", "error", "keys", "staff", "tenancy", "venues"]),
    (
        "dev",
        &[
            "access", "admin", "app", "audit", "auth", "config", "crypto", "db", "error", "menu", "payments",
            "tenancy", "venues",
        ],
    ),
];

/// The module that owns each table: the only one that writes it.
const TABLE_OWNERS: &[(&str, &str)] = &[
    ("tax_rates", "menu"),
    ("venues", "venues"),
    ("venue_settings", "venues"),
    ("platform_audit_events", "tenancy"),
    ("audit_events", "audit"),
    ("audit_seals", "audit"),
    ("private.audit_heads", "audit"),
    ("private.audit_export_cursors", "audit"),
    ("private.alert_events", "audit"),
    ("private.alert_windows", "audit"),
    ("private.alert_deliveries", "audit"),
    ("venue_data_keys", "keys"),
    ("private.platform_data_keys", "keys"),
    ("private.mail_outbox", "mail"),
    ("private.server_instances", "limits"),
    ("staff", "staff"),
    ("memberships", "staff"),
    ("staff_invitations", "staff"),
    ("private.invitation_tokens", "staff"),
    ("private.staff_venues", "staff"),
    ("oauth_grants", "auth"),
    ("private.oauth_clients", "auth"),
    ("private.oauth_codes", "auth"),
    ("private.oauth_tokens", "auth"),
    ("api_tokens", "auth"),
    ("private.api_token_hashes", "auth"),
    ("private.api_token_state", "auth"),
    ("private.auth_failures", "auth"),
    ("private.security_events", "auth"),
    ("private.password_resets", "auth"),
    ("private.staff_passwords", "auth"),
    ("private.staff_pins", "auth"),
    ("private.staff_recovery_codes", "auth"),
    ("private.staff_session_cutoffs", "auth"),
    ("private.staff_totp", "auth"),
    ("menu_categories", "menu"),
    ("menu_items", "menu"),
    ("diners", "diners"),
    ("private.diner_codes", "diners"),
    ("private.diner_identities", "diners"),
    ("private.diner_profiles", "diners"),
    ("orders", "orders"),
    ("order_counters", "orders"),
    ("payments", "orders"),
    ("refunds", "orders"),
    ("disputes", "orders"),
    ("checkouts", "payments"),
    ("checkout_items", "payments"),
    ("stripe_accounts", "payments"),
    ("private.stripe_account_venues", "payments"),
    ("private.stripe_events", "payments"),
    ("private.stripe_unreadable_events", "payments"),
    ("private.stripe_payment_intents", "payments"),
];

/// Reads of another module's table, each with its reason (`*`: any module).
const SHARED_READS: &[(&str, &str, &str)] = &[
    ("*", "venues", "the platform's list of tenants: a venue's name, slug and currency are everyone's to read"),
    ("auth", "memberships", "a token's permissions are the membership's now, read in the statement that verifies it"),
    ("auth", "venue_settings", "the venue's MFA rule is read with the membership at every issuance of a token"),
];

/// Who may make a `VenueId` from which trusted source.
const VENUE_ID_SOURCES: &[(&str, &[&str])] = &[
    ("from_credential", &["auth", "staff", "http"]),
    ("from_row", &["venues"]),
    ("from_payment_route", &["payments"]),
    ("from_door", &["audit", "keys", "dev"]),
    ("from_notification", &["orders"]),
    ("from_audit_head", &["audit"]),
];

/// Modules that may hold a raw pool or pooled connection: the database set-up, tenancy,
/// and the wiring that creates pools and hands them to tenancy at once.
const POOL_HOLDERS: &[&str] = &["db", "tenancy", "app", "dev"];

fn source_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            if !path.ends_with("bin") {
                source_files(&path, found);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The library's source files by module (`src/orders/refunds_and_disputes.rs` → `orders`): each with its
/// module path (`["orders", "money"]`) and its text.
fn modules() -> BTreeMap<String, Vec<(PathBuf, Vec<String>, String)>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut modules: BTreeMap<String, Vec<(PathBuf, Vec<String>, String)>> = BTreeMap::new();
    for path in files {
        let relative = path.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if relative == "lib.rs" || relative == "main.rs" {
            continue;
        }
        let module_path: Vec<String> =
            relative.trim_end_matches(".rs").split('/').filter(|part| *part != "mod").map(str::to_string).collect();
        let text = std::fs::read_to_string(&path).unwrap();
        modules.entry(module_path[0].clone()).or_default().push((Path::new("src").join(relative), module_path, text));
    }
    modules
}

/// `text` minus its comment lines (doc comments may name any table or constructor).
fn without_comments(text: &str) -> String {
    text.lines().map(|line| if line.trim_start().starts_with("//") { "" } else { line }).collect::<Vec<_>>().join("\n")
}

/// Collects the top-level modules a file reaches, from the module path it sits at.
struct ModuleUses {
    /// Where the walk is: the file's module path, plus inline `mod` blocks entered.
    scope: Vec<String>,
    used: BTreeSet<String>,
}

impl ModuleUses {
    /// The top-level module a path starting with `segments` reaches, if another one
    /// (`crate::x…`, or `super::` climbing to the crate root and then `x`).
    fn reach(&mut self, segments: &[String]) {
        let supers = segments.iter().take_while(|s| *s == "super").count();
        let top = match segments.first().map(String::as_str) {
            Some("crate") => segments.get(1),
            Some("super") if supers >= self.scope.len() => segments.get(supers),
            Some("super") => self.scope.first(),
            _ => None,
        };
        if let Some(top) = top.filter(|t| t.chars().next().is_some_and(|c| c.is_ascii_lowercase())) {
            self.used.insert(top.clone());
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.reach_with(prefix, &name.ident),
            syn::UseTree::Rename(rename) => self.reach_with(prefix, &rename.ident),
            syn::UseTree::Glob(_) => self.reach(prefix),
            syn::UseTree::Group(group) => group.items.iter().for_each(|item| self.use_tree(prefix, item)),
        }
    }

    fn reach_with(&mut self, prefix: &[String], last: &proc_macro2::Ident) {
        let mut full = prefix.to_vec();
        full.push(last.to_string());
        self.reach(&full);
    }

    /// `crate :: name` inside a macro's tokens (the parser does not read macro bodies).
    fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
        let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        for (at, token) in tokens.iter().enumerate() {
            match token {
                proc_macro2::TokenTree::Group(group) => self.tokens(group.stream()),
                proc_macro2::TokenTree::Ident(ident) if ident == "crate" => {
                    if let (
                        Some(proc_macro2::TokenTree::Punct(a)),
                        Some(proc_macro2::TokenTree::Punct(b)),
                        Some(proc_macro2::TokenTree::Ident(name)),
                    ) = (tokens.get(at + 1), tokens.get(at + 2), tokens.get(at + 3))
                        && a.as_char() == ':'
                        && b.as_char() == ':'
                    {
                        self.reach(&["crate".to_string(), name.to_string()]);
                    }
                }
                _ => {}
            }
        }
    }
}

impl<'ast> syn::visit::Visit<'ast> for ModuleUses {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.reach(&segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.scope.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.scope.pop();
    }

    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        self.tokens(mac.tokens.clone());
        syn::visit::visit_macro(self, mac);
    }
}

/// The top-level modules `code`, a file at `module_path`, reaches: every `use` form
/// (grouped, nested, renamed, glob, `pub use`), `crate::` paths in expressions and types,
/// `super::` that climbs to the crate root, and `crate::x` inside macro invocations.
fn used_modules(code: &str, module_path: &[&str]) -> BTreeSet<String> {
    let file = syn::parse_file(code).unwrap_or_else(|e| panic!("{module_path:?} does not parse: {e}"));
    let mut uses = ModuleUses { scope: module_path.iter().map(|s| s.to_string()).collect(), used: BTreeSet::new() };
    syn::visit::visit_file(&mut uses, &file);
    uses.used
}

fn arrows() -> BTreeMap<String, BTreeSet<String>> {
    modules()
        .into_iter()
        .map(|(module, files)| {
            let mut used: BTreeSet<String> = files
                .iter()
                .flat_map(|(_, path, code)| used_modules(code, &path.iter().map(String::as_str).collect::<Vec<_>>()))
                .collect();
            used.remove(&module);
            (module, used)
        })
        .collect()
}

/// A cycle through `start`, if any (depth-first over the arrows).
fn cycle(arrows: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        arrows: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut found = path[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in arrows.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, arrows, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    arrows.keys().find_map(|node| visit(node, arrows, &mut Vec::new(), &mut done))
}

#[test]
fn every_arrow_between_modules_is_in_the_table_and_none_runs_in_a_circle() {
    let table: BTreeMap<&str, BTreeSet<&str>> =
        ROOMS.iter().map(|(room, uses)| (*room, uses.iter().copied().collect())).collect();
    let arrows = arrows();
    let mut problems = Vec::new();
    for (module, used) in &arrows {
        let Some(allowed) = table.get(module.as_str()) else {
            problems.push(format!("module {module} is not in ROOMS: say which modules it may use"));
            continue;
        };
        for target in used {
            if !allowed.contains(target.as_str()) {
                problems.push(format!("{module} uses {target}, an arrow not in ROOMS"));
            }
        }
    }
    for room in table.keys() {
        if !arrows.contains_key(*room) {
            problems.push(format!("ROOMS names {room}, which is not a module of src/"));
        }
    }
    if let Some(circle) = cycle(&arrows) {
        problems.push(format!("modules in a circle: {}", circle.join(" -> ")));
    }
    let table_as_arrows: BTreeMap<String, BTreeSet<String>> =
        ROOMS.iter().map(|(room, uses)| (room.to_string(), uses.iter().map(|u| u.to_string()).collect())).collect();
    if let Some(circle) = cycle(&table_as_arrows) {
        problems.push(format!("ROOMS itself allows a circle: {}", circle.join(" -> ")));
    }
    assert!(problems.is_empty(), "the module structure broke:\n{}", problems.join("\n"));
}

/// Every table the migrations create.
fn tables() -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut tables = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let sql = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for part in sql.split("CREATE TABLE ").skip(1) {
            let name: String = part
                .trim_start_matches("IF NOT EXISTS ")
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '(')
                .collect();
            tables.insert(name);
        }
    }
    tables
}

/// The tables `code` reads and writes: SQL keywords are upper case in this code base.
fn table_uses(code: &str, tables: &BTreeSet<String>) -> Vec<(String, bool)> {
    let words: Vec<&str> = code.split(|c: char| c.is_whitespace() || c == '"' || c == '(' || c == ',').collect();
    let mut uses = Vec::new();
    for (at, pair) in words.windows(2).enumerate() {
        let name = pair[1].trim_start_matches("public.").trim_end_matches([')', ';', '\\']);
        if !tables.contains(name) {
            continue;
        }
        let write = match pair[0] {
            "INTO" | "UPDATE" => true,
            "FROM" => at > 0 && words[at - 1] == "DELETE",
            "JOIN" | "TABLE" => false,
            _ => continue,
        };
        uses.push((name.to_string(), write));
    }
    uses
}

#[test]
fn every_table_has_one_owner_and_no_module_writes_or_quietly_reads_another_modules_table() {
    let owners: BTreeMap<&str, &str> = TABLE_OWNERS.iter().copied().collect();
    let tables = tables();
    let mut problems = Vec::new();
    for table in &tables {
        if !owners.contains_key(table.as_str()) {
            problems.push(format!("table {table} has no owner in TABLE_OWNERS"));
        }
    }
    for (module, files) in modules() {
        for (path, _, text) in files {
            let code = without_comments(&text);
            for (table, write) in table_uses(&code, &tables) {
                let Some(owner) = owners.get(table.as_str()) else { continue };
                if *owner == module {
                    continue;
                }
                let shared =
                    SHARED_READS.iter().any(|(reader, t, _)| (*reader == "*" || *reader == module) && *t == table);
                if write {
                    problems.push(format!("{} writes {table}, which {owner} owns", path.display()));
                } else if !shared {
                    problems
                        .push(format!("{} reads {table}, which {owner} owns (no SHARED_READS entry)", path.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "table ownership broke:\n{}", problems.join("\n"));
}

#[test]
fn venue_ids_come_only_from_their_trusted_sources_and_no_feature_holds_a_raw_pool() {
    let mut problems = Vec::new();
    for (module, files) in modules() {
        for (path, _, text) in files {
            let code = without_comments(&text);
            let show = path.display();
            let reads_data = [".data::<", ".data_opt::<", ".data_unchecked::<"].iter().any(|call| code.contains(call));
            if module != "graphql" && reads_data {
                problems.push(format!("{show} reads a request service with ctx.data: use graphql::context"));
            }
            if module != "tenancy" && code.contains("VenueId(") && !code.contains("struct VenueId") {
                problems.push(format!("{show} builds a VenueId by hand"));
            }
            for (constructor, allowed) in VENUE_ID_SOURCES {
                if code.contains(&format!("VenueId::{constructor}(")) && !allowed.contains(&module.as_str()) {
                    problems.push(format!("{show} makes a VenueId {constructor}, which only {allowed:?} may"));
                }
            }
            if code.contains("VenueId::from_uuid") {
                problems.push(format!("{show} uses VenueId::from_uuid, which does not name its source"));
            }
            let holds_pool = ["PgPool", "sqlx::Pool", "PoolConnection"].iter().any(|p| code.contains(p));
            if holds_pool && !POOL_HOLDERS.contains(&module.as_str()) {
                problems.push(format!("{show} holds a raw pool or pooled connection"));
            }
        }
    }
    assert!(problems.is_empty(), "an escape hatch opened:\n{}", problems.join("\n"));
}

#[test]
fn the_checks_themselves_see_what_they_look_for() {
    // A check that cannot see what it forbids would pass forever.
    let tables: BTreeSet<String> = ["orders".to_string(), "checkouts".to_string()].into();
    let code = "sqlx::query(\"INSERT INTO orders (a) SELECT 1 FROM checkouts c\"); \"DELETE FROM orders\"";
    assert_eq!(
        table_uses(code, &tables),
        [("orders".to_string(), true), ("checkouts".to_string(), false), ("orders".to_string(), true)]
    );
    let at = ["auth", "graphql"];
    let reached = |code: &str| used_modules(code, &at).into_iter().collect::<Vec<_>>();
    assert_eq!(
        reached("use crate::orders::refunds_and_disputes; fn f() { crate::payments::x(); }"),
        ["orders", "payments"]
    );
    assert_eq!(reached("use crate::{staff, venues};"), ["staff", "venues"], "a grouped import");
    assert_eq!(reached("use crate::{a::{b, c::d}, e as f};"), ["a", "e"], "nested groups and renames");
    assert_eq!(reached("pub use crate::menu::*;"), ["menu"], "a glob re-export");
    assert_eq!(reached("fn f() { let _ = crate::staff::at_current_venue(1); }"), ["staff"], "an expression path");
    assert_eq!(reached("fn f(x: crate::orders::Order) -> Vec<crate::diners::D> { todo!() }"), ["diners", "orders"]);
    assert_eq!(reached("fn f() { super::super::orders::x(); }"), ["orders"], "super climbing to the root");
    assert_eq!(reached("fn f() { super::login::x(); }"), ["auth"], "super within the module: its own room");
    assert_eq!(reached("mod tests { use super::*; fn t() { super::super::x(); } }"), ["auth"], "inline mods");
    assert_eq!(reached("fn f() { tracing::info!(x = ?crate::audit::y()); }"), ["audit"], "inside a macro");
    let circle: BTreeMap<String, BTreeSet<String>> =
        [("a", "b"), ("b", "a")].iter().map(|(x, y)| (x.to_string(), [y.to_string()].into())).collect();
    assert!(cycle(&circle).is_some());
    let all = self::tables();
    assert!(all.contains("orders") && all.contains("private.stripe_events"));
}
