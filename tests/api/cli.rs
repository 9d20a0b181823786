//! The command line, run as an operator would, against the test database.

use std::process::Command;

use serde_json::Value;

use crate::helpers::{TestApp, error_code};

fn venueql(app: &TestApp, args: &[&str]) -> (bool, Value, String) {
    venueql_with(app, args, &[("HIBP_MODE", "off")])
}

fn venueql_with(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (bool, Value, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(args)
        .envs(env.iter().copied())
        .env("DATABASE_URL", &app.urls.app)
        .env("DATABASE_OWNER_URL", &app.urls.owner)
        .env("DATABASE_PLATFORM_URL", &app.urls.platform)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
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
        .env("APP_KEY", crate::helpers::TEST_APP_KEY)
        .env("IDENTITY_HMAC_KEY", crate::helpers::TEST_IDENTITY_KEY)
        .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
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
                .env("AUDIT_HMAC_KEY", crate::helpers::TEST_AUDIT_KEY)
                .output()
                .unwrap();
            assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
        }
    }
    let pool = venueql::db::pool(&urls.app, 1).await.unwrap();
    venueql::db::check_app_role(&pool).await.unwrap();
    assert!(venueql::db::migrations_current(&pool).await.unwrap());
}

#[tokio::test]
async fn create_client_registers_each_kind_and_refuses_bad_input_clearly() {
    let app = TestApp::spawn().await;
    let audited_before = app.audit_count(&app.a, "oauth_client.created").await;
    let (ok, spa, err) = venueql(
        &app,
        &["admin", "create-client", "--kind", "spa", "--name", "Web", "--redirect-uri", "https://app.example.com/cb"],
    );
    assert!(ok, "{err}");
    assert!(spa["client_id"].as_str().unwrap().starts_with("vqc_") && spa.get("client_secret").is_none(), "{spa}");
    let (ok, integration, err) = venueql(
        &app,
        &[
            "admin",
            "create-client",
            "--kind",
            "integration",
            "--name",
            "Books",
            "--venue",
            "alpha",
            "--permissions",
            "MENU_VIEW",
        ],
    );
    assert!(ok, "{err}");
    assert!(integration["client_secret"].as_str().unwrap().starts_with("vqcs_"), "{integration}");
    assert_eq!(app.audit_count(&app.a, "oauth_client.created").await, audited_before + 1);
    let spa = [
        "admin",
        "create-client",
        "--kind",
        "spa",
        "--name",
        "Kitchen",
        "--venue",
        "alpha",
        "--redirect-uri",
        "https://kitchen.example.com/",
        "--origin",
        "https://Kitchen.example.com",
    ];
    let (ok, created, err) = venueql(&app, &spa);
    assert!(ok, "{err}");
    assert_eq!(created["allowed_origins"], serde_json::json!(["https://kitchen.example.com"]), "{created}");
    assert!(created.get("client_secret").is_none(), "{created}");
    let cases: [(&[&str], &str); 6] = [
        (&["admin", "create-client", "--kind", "spa", "--name", "Web"], "needs 1 to 10 redirect URIs"),
        (
            &[
                "admin",
                "create-client",
                "--kind",
                "spa",
                "--name",
                "Web",
                "--redirect-uri",
                "https://w.example/",
                "--origin",
                "*",
            ],
            "wildcard",
        ),
        (
            &[
                "admin",
                "create-client",
                "--kind",
                "integration",
                "--name",
                "B",
                "--venue",
                "alpha",
                "--origin",
                "https://b.example",
            ],
            "not a browser app",
        ),
        (&["admin", "create-client", "--kind", "integration", "--name", "Books"], "needs --venue"),
        (
            &["admin", "create-client", "--kind", "spa", "--name", "Web", "--redirect-uri", "http://evil.example/cb"],
            "must use https",
        ),
        (
            &["admin", "create-client", "--kind", "robot", "--name", "R", "--venue", "alpha"],
            "kind must be spa, integration or pos",
        ),
    ];
    for (args, message) in cases {
        let (ok, _, err) = venueql(&app, args);
        assert!(!ok && err.contains(message), "{args:?}: {err}");
    }
}

type RangeRequests = std::sync::Arc<std::sync::Mutex<Vec<(String, Option<String>)>>>;

/// A fake Pwned Passwords range API: answers every prefix with a padded body that holds
/// `breached` (count 42) and `padded` (count 0, a padding line).
async fn fake_range_api(breached: &str, padded: &str) -> (String, RangeRequests) {
    use axum::extract::{Path, State};
    use sha1::{Digest, Sha1};
    let hex = |p: &str| Sha1::digest(p.as_bytes()).iter().map(|b| format!("{b:02X}")).collect::<String>();
    let body =
        format!("0018A45C4D1DEF81644B54AB7F969B88D65:3\r\n{}:42\r\n{}:0\r\n", &hex(breached)[5..], &hex(padded)[5..]);
    let requests: RangeRequests = Default::default();
    let router = axum::Router::new()
        .route(
            "/range/{prefix}",
            axum::routing::get(
                |State((body, seen)): State<(String, RangeRequests)>,
                 Path(prefix): Path<String>,
                 headers: axum::http::HeaderMap| async move {
                    let padding = headers.get("add-padding").map(|v| v.to_str().unwrap().to_string());
                    seen.lock().unwrap().push((prefix, padding));
                    body
                },
            ),
        )
        .with_state((body, requests.clone()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    (base, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breached_passwords_are_refused_online_and_offline_with_a_clear_reason() {
    let app = TestApp::spawn().await;
    let (breached, padded, fresh) = ("Breached-Pass-123", "Padded-Pass-1234", "Fresh-Unseen-Pass-99");
    let (base, requests) = fake_range_api(breached, padded).await;
    let online = [("HIBP_MODE", "online"), ("HIBP_API_BASE", base.as_str()), ("HIBP_FAIL_OPEN", "false")];
    let create = |email: &str, password: &str, env: &[(&str, &str)]| {
        venueql_with(&app, &["admin", "create-staff", "--email", email, "--password", password], env)
    };
    let (ok, _, err) = create("a@x.test", breached, &online);
    assert!(!ok && err.contains("appears in 42 known data breaches"), "{err}");
    let (ok, _, err) = create("b@x.test", padded, &online);
    assert!(ok, "a padding line (count 0) is not a breach: {err}");
    let seen = requests.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for (prefix, padding) in seen {
        assert!(
            prefix.len() == 5 && prefix.bytes().all(|b| b.is_ascii_hexdigit()),
            "only a 5-hex prefix leaves: {prefix}"
        );
        assert_eq!(padding.as_deref(), Some("true"));
    }

    let closed = format!("http://127.0.0.1:{}", crate::helpers::free_port());
    let (ok, _, err) =
        create("c@x.test", fresh, &[("HIBP_MODE", "online"), ("HIBP_API_BASE", &closed), ("HIBP_FAIL_OPEN", "false")]);
    assert!(!ok && err.contains("unavailable"), "fail closed: {err}");
    let (ok, _, err) =
        create("c@x.test", fresh, &[("HIBP_MODE", "online"), ("HIBP_API_BASE", &closed), ("HIBP_FAIL_OPEN", "true")]);
    assert!(ok && err.contains("breached-password check unavailable"), "fail open, logged: {err}");

    use sha1::{Digest, Sha1};
    let mut lines: Vec<String> = (0..200)
        .map(|i| format!("pw-{i}"))
        .chain([breached.to_string()])
        .map(|p| format!("{}:{}", Sha1::digest(p.as_bytes()).iter().map(|b| format!("{b:02X}")).collect::<String>(), 7))
        .collect();
    lines.sort();
    let file = std::env::temp_dir().join(format!("venueql-pwned-{}.txt", uuid::Uuid::new_v4()));
    std::fs::write(&file, lines.join("\r\n")).unwrap();
    let offline = [("HIBP_MODE", "offline"), ("HIBP_OFFLINE_FILE", file.to_str().unwrap())];
    let (ok, _, err) = create("d@x.test", breached, &offline);
    assert!(!ok && err.contains("appears in 7 known data breaches"), "{err}");
    let (ok, _, err) = create("d@x.test", "Another-Fresh-Pass-7", &offline);
    assert!(ok, "{err}");
    std::fs::remove_file(&file).unwrap();
}

#[tokio::test]
async fn keys_commands_rotate_and_offboard_shreds_with_clear_output() {
    let app = TestApp::spawn().await;
    let key = [("APP_KEY", crate::helpers::TEST_APP_KEY)];
    // A diner at alpha first, so there is something to re-encrypt.
    app.onboard(&app.a).await;
    let items = serde_json::json!([{ "menuItemId": app.a.item_ids[0], "quantity": 1 }]);
    let diner = serde_json::json!({ "email": "cli.diner@example.com", "allergens": ["EGGS"] });
    let started = app
        .public_gql(
            "alpha",
            "mutation($input: StartCheckoutInput!) { startCheckout(input: $input) { checkoutId } }",
            serde_json::json!({ "input": { "items": items, "diner": diner } }),
        )
        .await;
    assert!(started["errors"].is_null(), "{started}");
    let (ok, rotated, err) = venueql_with(&app, &["keys", "rotate-venue", "--venue", "alpha"], &key);
    assert!(ok, "{err}");
    assert_eq!(
        (rotated["key_version"].as_i64(), rotated["reencrypted_rows"].as_i64()),
        (Some(2), Some(1)),
        "{rotated}"
    );
    let (ok, master, err) = venueql_with(&app, &["keys", "rotate-master"], &key);
    assert!(ok, "{err}");
    assert!(master["rewrapped_keys"].as_i64().unwrap() >= 2, "{master}");
    let (ok, _, err) = venueql_with(&app, &["keys", "rotate-master"], &[]);
    assert!(!ok && err.contains("APP_KEY is not set"), "without APP_KEY: {err}");
    let (ok, offboarded, err) = venueql(&app, &["admin", "offboard-venue", "--venue", "alpha"]);
    assert!(ok, "{err}");
    assert_eq!(offboarded["data_keys_destroyed"], 2, "{offboarded}");
    let (ok, _, err) = venueql(&app, &["admin", "offboard-venue", "--venue", "nowhere"]);
    assert!(!ok && err.contains("no venue with slug"), "{err}");
}

#[tokio::test]
async fn operators_send_reset_links_and_remove_mfa_and_both_are_in_the_platform_audit() {
    let app = TestApp::spawn().await;
    let key = [("APP_KEY", crate::helpers::TEST_APP_KEY)];
    let (ok, json, err) = venueql_with(&app, &["admin", "reset-password", "--email", "Member@Alpha.test"], &key);
    assert!(ok, "{err}");
    assert_eq!(json["reset_link_queued"], true, "{json}");
    let (link, token) = app.mail.wait_for("member@alpha.test").await.link("/oauth/reset");
    assert!(token.starts_with("vqpr_"), "{link}");
    assert_eq!(app.hosted_get(&link).await.status, 200, "the operator's link works");
    let (ok, _, err) = venueql_with(&app, &["admin", "reset-password", "--email", "member@alpha.test"], &[]);
    assert!(!ok && err.contains("APP_KEY"), "without APP_KEY the mail cannot be sealed: {err}");
    let (ok, _, err) = venueql_with(&app, &["admin", "reset-password", "--email", "nobody@alpha.test"], &key);
    assert!(!ok && err.contains("no staff member with email"), "{err}");

    let (ok, json, err) = venueql(&app, &["admin", "reset-mfa", "--email", "member@alpha.test"]);
    assert!(ok, "{err}");
    assert_eq!((json["mfa_removed"].as_bool(), json["sessions_ended"].as_bool()), (Some(true), Some(true)));
    let mut tx = app.door.open_cross_tenant("operator:test", "test reads the platform audit").await.unwrap();
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM platform_audit_events ORDER BY id").fetch_all(tx.conn()).await.unwrap();
    tx.commit().await.unwrap();
    for expected in
        ["admin reset-password", "reset link sent to staff", "admin reset-mfa", "two-factor authentication removed"]
    {
        assert!(reasons.iter().any(|r| r.starts_with(expected)), "{expected:?} not in {reasons:?}");
    }
}

#[tokio::test]
async fn retention_run_reports_what_it_deleted_and_refuses_a_bad_period() {
    let app = TestApp::spawn().await;
    app.place_order(&app.a, "alpha").await;
    let (ok, kept, err) = venueql(&app, &["retention", "run"]);
    assert!(ok, "{err}");
    assert_eq!(kept["venues"], serde_json::json!([]), "30 days by default: {kept}");
    let (ok, purged, err) = venueql_with(&app, &["retention", "run"], &[("RETENTION_STRIPE_EVENTS_DAYS", "0")]);
    assert!(ok, "{err}");
    assert_eq!(purged["venues"][0]["stripe_event_bodies"], 2, "account and payment: {purged}");
    let (ok, _, err) = venueql_with(&app, &["retention", "run"], &[("RETENTION_UNVERIFIED_DINERS_DAYS", "soon")]);
    assert!(!ok);
    assert!(err.contains("RETENTION_UNVERIFIED_DINERS_DAYS"), "{err}");
}

#[tokio::test]
async fn serve_refuses_to_start_without_the_shared_keys_and_keys_generate_makes_them() {
    let app = TestApp::spawn().await;
    let serve = |env: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_venueql"))
            .arg("serve")
            .env_clear()
            .env("DATABASE_URL", &app.urls.app)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .envs(env.iter().copied())
            .output()
            .unwrap()
    };
    let refused = serve(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("APP_KEY and IDENTITY_HMAC_KEY") && err.contains("venueql keys generate"), "{err}");
    let half = serve(&[("APP_KEY", crate::helpers::TEST_APP_KEY)]);
    assert!(String::from_utf8_lossy(&half.stderr).contains("IDENTITY_HMAC_KEY and AUDIT_HMAC_KEY not set"), "{half:?}");
    let pooled = serve(&[("DATABASE_POOL_MODE", "transaction")]);
    assert!(String::from_utf8_lossy(&pooled.stderr).contains("needs DATABASE_LISTEN_URL"), "{pooled:?}");
    let unknown = serve(&[("DATABASE_POOL_MODE", "statement")]);
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("direct or transaction"), "{unknown:?}");

    let generated =
        Command::new(env!("CARGO_BIN_EXE_venueql")).args(["keys", "generate", "--database-passwords"]).output();
    let text = String::from_utf8(generated.unwrap().stdout).unwrap();
    let names: Vec<&str> = text.lines().map(|l| l.split_once('=').unwrap().0).collect();
    assert_eq!(
        names,
        [
            "APP_KEY",
            "IDENTITY_HMAC_KEY",
            "AUDIT_HMAC_KEY",
            "POSTGRES_PASSWORD",
            "VENUEQL_OWNER_PASSWORD",
            "VENUEQL_APP_PASSWORD",
            "VENUEQL_PLATFORM_PASSWORD"
        ]
    );
    let key = text.lines().next().unwrap().split_once('=').unwrap().1;
    let settings = |name: &str| match name {
        "DATABASE_URL" => Some(app.urls.app.clone()),
        "APP_KEY" | "IDENTITY_HMAC_KEY" | "AUDIT_HMAC_KEY" => Some(key.to_string()),
        _ => None,
    };
    let config = venueql::config::Config::from_lookup(settings).expect("generated keys are valid settings");
    assert!(config.keys.master.is_some() && config.keys.identity.is_some() && config.keys.audit.is_some());
}

// The server runs on this test's runtime while the command blocks a thread: two workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_is_ready_only_when_the_server_answers_readyz() {
    let app = TestApp::spawn().await;
    let check = |url: String| {
        Command::new(env!("CARGO_BIN_EXE_venueql"))
            .args(["healthcheck", "--url", &url])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(check(format!("{}/readyz", app.base)));
    assert!(!check(format!("{}/no-such-endpoint", app.base)), "a non-2xx answer is not ready");
    assert!(!check("http://127.0.0.1:1/readyz".into()), "no server is not ready");
}
