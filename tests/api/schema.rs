//! The committed SDL files are the schema the code generates.

fn check(file: &str, generated: String, command: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(committed == generated, "{file} is stale: regenerate it with `{command}` and commit it");
}

#[test]
fn schema_graphql_matches_the_code() {
    check("schema.graphql", venueql::schema::staff_sdl(), "cargo run -q -- schema > schema.graphql");
}

#[test]
fn schema_public_graphql_matches_the_code() {
    check(
        "schema.public.graphql",
        venueql::schema::public_sdl(),
        "cargo run -q -- schema --public > schema.public.graphql",
    );
}
