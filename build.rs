//! Rebuilds when a migration changes: `sqlx::migrate!` embeds the `migrations/` directory
//! at compile time, and cargo does not otherwise watch it (sqlx's documented advice).

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
