//! The command line, run as an operator would, against the test database.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{TestApp, error_code};

fn venueql(app: &TestApp, args: &[&str]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(args)
        .env("DATABASE_URL", &app.urls.app)
        .env("DATABASE_OWNER_URL", &app.urls.owner)
        .env("DATABASE_PLATFORM_URL", &app.urls.platform)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run venueql");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let json = serde_json::from_str(&stdout).unwrap_or(Value::Null);
    (output.status.success(), json, String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn admin_commands_create_a_venue_staff_and_a_token_that_works_until_revoked() {
    let app = TestApp::spawn().await;
    let (ok, venue, err) =
        venueql(&app, &["admin", "create-venue", "--slug", "charlie", "--name", "Charlie's", "--currency", "usd"]);
    assert!(ok, "{err}");
    assert_eq!((venue["slug"].as_str(), venue["currency"].as_str()), (Some("charlie"), Some("USD")));
    let (ok, _, err) =
        venueql(&app, &["admin", "create-staff", "--email", "Chef@Charlie.test", "--password", "Sauce-Pan-2026!"]);
    assert!(ok, "{err}");
    let (ok, granted, err) = venueql(
        &app,
        &[
            "admin",
            "grant",
            "--venue",
            "charlie",
            "--email",
            "chef@charlie.test",
            "--permissions",
            "MENU_VIEW,MENU_EDIT",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(granted["permissions"], serde_json::json!(["MENU_VIEW", "MENU_EDIT"]));
    let (ok, token, err) = venueql(
        &app,
        &["admin", "issue-token", "--venue", "charlie", "--name", "pos-sync", "--permissions", "MENU_VIEW"],
    );
    assert!(ok, "{err}");
    let bearer = format!("Bearer {}", token["token"].as_str().unwrap());
    assert!(token["token"].as_str().unwrap().starts_with("vqat_"));
    let (status, body) =
        app.post("/graphql", &[("authorization", &bearer)], r#"{"query":"{ menu { categories { name } } }"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["menu"]["categories"], serde_json::json!([]));
    let token_id = token["token_id"].as_str().unwrap();
    let (ok, _, err) = venueql(&app, &["admin", "revoke-token", "--venue", "charlie", "--token-id", token_id]);
    assert!(ok, "{err}");
    let (status, body) =
        app.post("/graphql", &[("authorization", &bearer)], r#"{"query":"{ menu { categories { name } } }"}"#).await;
    assert_eq!((status.as_u16(), error_code(&body)), (401, "UNAUTHENTICATED"));
    let (ok, report, err) = venueql(&app, &["audit", "verify"]);
    assert!(ok, "{err}");
    assert_eq!(report["intact"], true);
}

#[tokio::test]
async fn admin_commands_refuse_bad_input_clearly() {
    let app = TestApp::spawn().await;
    let cases: [(&[&str], &str); 5] = [
        (&["admin", "create-venue", "--slug", "Bad Slug", "--name", "x"], "slug must be 1-63 lowercase"),
        (&["admin", "create-venue", "--slug", "alpha", "--name", "x"], "already exists"),
        (
            &["admin", "create-staff", "--email", "a@b.test", "--password", "short"],
            "password needs at least 12 characters",
        ),
        (
            &["admin", "issue-token", "--venue", "alpha", "--name", "x", "--permissions", "GOD_MODE"],
            "unknown permission \"GOD_MODE\"",
        ),
        (
            &["admin", "issue-token", "--venue", "nowhere", "--name", "x", "--permissions", "MENU_VIEW"],
            "no venue with slug",
        ),
    ];
    for (args, message) in cases {
        let (ok, _, err) = venueql(&app, args);
        assert!(!ok && err.contains(message), "{args:?}: {err}");
    }
}

#[tokio::test]
async fn serve_exits_non_zero_naming_the_problem_when_run_as_the_owner() {
    let app = TestApp::spawn().await;
    let output = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .arg("serve")
        .env("DATABASE_URL", &app.urls.owner)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("refusing to run") && stderr.contains("owns tables"), "{stderr}");
}

#[tokio::test]
async fn db_init_and_migrate_are_idempotent_commands() {
    let cluster = crate::helpers::cluster();
    let urls = cluster.urls("t_init_twice");
    let superuser = cluster.cluster.superuser_url("postgres");
    for _ in 0..2 {
        for args in [&["db", "init", "--superuser-url", superuser.as_str()][..], &["migrate"][..]] {
            let output = Command::new(env!("CARGO_BIN_EXE_venueql"))
                .args(args)
                .env("DATABASE_URL", &urls.app)
                .env("DATABASE_OWNER_URL", &urls.owner)
                .env("DATABASE_PLATFORM_URL", &urls.platform)
                .output()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    let pool = venueql::db::pool(&urls.app, 1).await.unwrap();
    venueql::db::check_app_role(&pool).await.unwrap();
    assert!(venueql::db::migrations_current(&pool).await.unwrap());
}
