//! `venueql dev` as a new user runs it: the binary, a fresh data directory, the demo
//! tokens from dev.json, SIGTERM, and a second run that reuses the directory.

use std::path::Path;
use std::process::Command;

use crate::helpers::KillOnDrop;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub(crate) struct DevRun {
    pub(crate) child: KillOnDrop,
    pub(crate) dev_json: Value,
}

pub(crate) fn start(dir: &Path) -> DevRun {
    start_with(dir, &[])
}

/// `venueql dev` with extra settings in its environment.
pub(crate) fn start_with(dir: &Path, env: &[(&str, &str)]) -> DevRun {
    let _ = std::fs::remove_file(dir.join("dev.json"));
    let child = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .envs(env.iter().copied())
        .args(["dev", "--data-dir"])
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        // No network here: the breached-password check is covered by the CLI tests' fake.
        .env("HIBP_MODE", "off")
        .env_remove("DATABASE_URL")
        .env_remove("DATABASE_OWNER_URL")
        .env_remove("DATABASE_PLATFORM_URL")
        .env_remove("STRIPE_SECRET_KEY")
        .env_remove("STRIPE_API_BASE")
        .spawn()
        .map(KillOnDrop)
        .expect("start venueql dev");
    let mut run = DevRun { child, dev_json: Value::Null };
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(text) = std::fs::read_to_string(dir.join("dev.json")) {
            run.dev_json = serde_json::from_str(&text).expect("dev.json is JSON");
            return run;
        }
        assert!(Instant::now() < deadline, "venueql dev wrote no dev.json within 90 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn stop(mut run: DevRun, dir: &Path) {
    assert!(run.child.terminate(), "venueql dev did not exit cleanly on SIGTERM");
    assert!(!dir.join("pgdata/postmaster.pid").exists(), "PostgreSQL is still running after venueql dev stopped");
}

pub(crate) fn token<'a>(dev: &'a Value, venue: usize, name: &str) -> &'a str {
    let tokens = dev["venues"][venue]["tokens"].as_array().unwrap();
    tokens.iter().find(|t| t["name"] == name).unwrap()["token"].as_str().unwrap()
}

/// `venueql dev pay --client-secret S`, as the README shows; the webhook must answer 200.
fn pay(dir: &Path, secret: &str) {
    let paid = Command::new(env!("CARGO_BIN_EXE_venueql"))
        .args(["dev", "--data-dir"])
        .arg(dir)
        .args(["pay", "--client-secret", secret])
        .output()
        .unwrap();
    assert!(paid.status.success(), "venueql dev pay: {}", String::from_utf8_lossy(&paid.stderr));
    let answer: Value = serde_json::from_slice(&paid.stdout).unwrap();
    assert_eq!(answer["webhook_status"], 200, "{answer}");
}

/// A new user's order: a checkout on the demo café's public endpoint, paid with
/// `venueql dev pay`; returns the order numbers then in the queue.
async fn check_out_and_pay(dev: &Value, dir: &Path) -> Vec<i64> {
    let public = dev["venues"][0]["public_graphql_url"].as_str().unwrap();
    let menu = query(public, None, "{ menu { categories { items { id name } } } }").await;
    let item = menu["data"]["menu"]["categories"][0]["items"][0]["id"].as_str().unwrap().to_string();
    let started = query(
        public,
        None,
        &format!("mutation {{ startCheckout(input: {{ items: [{{ menuItemId: \"{item}\", quantity: 2 }}] }}) {{ clientSecret amountMinor }} }}"),
    )
    .await;
    let secret = started["data"]["startCheckout"]["clientSecret"].as_str().unwrap_or_else(|| panic!("{started}"));
    pay(dir, secret);
    let queue =
        query(dev["graphql_url"].as_str().unwrap(), Some(token(dev, 0, "everything")), "{ ordersQueue { number } }")
            .await;
    queue["data"]["ordersQueue"].as_array().unwrap().iter().map(|o| o["number"].as_i64().unwrap()).collect()
}

/// Issue 5's new-user check: a diner with a peanut allergy orders the peanut toast; the
/// full token sees the flag, the casual token does not.
async fn peanut_diner_is_flagged(dev: &Value, dir: &Path) {
    let public = dev["venues"][0]["public_graphql_url"].as_str().unwrap();
    let menu = query(public, None, "{ menu { categories { items { id name } } } }").await;
    let items: Vec<&Value> = menu["data"]["menu"]["categories"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["items"].as_array().unwrap())
        .collect();
    let toast =
        items.iter().find(|i| i["name"] == "Peanut Butter Toast").expect("the demo café has peanut toast")["id"]
            .as_str()
            .unwrap();
    let started = query(
        public,
        None,
        &format!("mutation {{ startCheckout(input: {{ items: [{{ menuItemId: \"{toast}\", quantity: 1 }}], diner: {{ email: \"new.user@example.com\", allergens: [PEANUTS] }} }}) {{ clientSecret }} }}"),
    )
    .await;
    let secret = started["data"]["startCheckout"]["clientSecret"].as_str().unwrap_or_else(|| panic!("{started}"));
    pay(dir, secret);
    let url = dev["graphql_url"].as_str().unwrap();
    let queue = "{ ordersQueue { number allergenAlerts { itemName allergens } } }";
    let full = query(url, Some(token(dev, 0, "everything")), queue).await;
    let flagged =
        full["data"]["ordersQueue"].as_array().unwrap().iter().find(|o| o["allergenAlerts"] != json!([])).cloned();
    assert_eq!(
        flagged.expect("an order is flagged")["allergenAlerts"],
        json!([{ "itemName": "Peanut Butter Toast", "allergens": ["PEANUTS"] }])
    );
    let casual = query(url, Some(token(dev, 0, "casual")), queue).await;
    assert!(casual["errors"].is_null(), "{casual}");
    assert!(
        casual["data"]["ordersQueue"].as_array().unwrap().iter().all(|o| o["allergenAlerts"].is_null()),
        "{casual}"
    );
}

pub(crate) async fn query(url: &str, token: Option<&str>, query: &str) -> Value {
    let mut request = reqwest::Client::new().post(url).json(&json!({ "query": query }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn venueql_dev_serves_the_demo_menu_stops_cleanly_and_reuses_its_directory() {
    venueql::app::install_tls_provider();
    let dir = std::env::temp_dir().join(format!("venueql-devtest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let run = start(&dir);
    let dev = run.dev_json.clone();
    let url = dev["graphql_url"].as_str().unwrap().to_string();
    for key in ["database_url", "owner_database_url", "platform_database_url"] {
        assert!(dev[key].as_str().unwrap().starts_with("postgres://"), "{key} missing from dev.json");
    }
    assert_eq!(dev["venues"][0]["tokens"][1]["permissions"], json!(["ORDERS_QUEUE"]));
    let login_url = dev["oauth"]["login_url"].as_str().expect("dev.json has a login URL");
    let login_page = reqwest::get(login_url).await.unwrap();
    assert_eq!(login_page.status(), 200);
    assert!(login_page.text().await.unwrap().contains("<label for=\"password\">Password</label>"));

    let menu = "{ menu { categories { name items { name priceMinor allergens } } } }";
    let full = query(&url, Some(token(&dev, 0, "everything")), menu).await;
    assert!(full["errors"].is_null(), "{full}");
    assert!(full.to_string().contains("Peanut Butter Toast"), "{full}");
    let casual = query(&url, Some(token(&dev, 0, "casual")), menu).await;
    assert_eq!(casual["errors"][0]["extensions"]["code"], "FORBIDDEN", "{casual}");
    let public = query(dev["venues"][1]["public_graphql_url"].as_str().unwrap(), None, "{ venue { slug } }").await;
    assert_eq!(public["data"]["venue"]["slug"], "demo-bistro");
    assert_eq!(check_out_and_pay(&dev, &dir).await, vec![1], "the paid checkout is order 1 in the queue");
    peanut_diner_is_flagged(&dev, &dir).await;
    an_invitation_lands_in_the_mail_directory(&dev, &dir).await;
    stop(run, &dir);

    let again = start(&dir);
    let identity = |d: &Value| -> Vec<Value> {
        d["venues"].as_array().unwrap().iter().map(|v| json!([v["slug"], v["id"], v["tokens"]])).collect()
    };
    assert_eq!(identity(&again.dev_json), identity(&dev), "a second run reuses the seeded venues and tokens");
    let url = again.dev_json["graphql_url"].as_str().unwrap().to_string();
    let full = query(&url, Some(token(&dev, 0, "everything")), menu).await;
    assert!(full["errors"].is_null(), "{full}");
    assert_eq!(check_out_and_pay(&again.dev_json, &dir).await, vec![1, 2, 3], "payments still work after a restart");
    stop(again, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The newest `.eml` file in the dev mail directory addressed to `to` (waits up to 15 s).
fn mail_file(dir: &Path, to: &str, nth: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut mails: Vec<(std::time::SystemTime, String)> = std::fs::read_dir(dir.join("mail"))
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                    .filter_map(|e| {
                        Some((e.metadata().ok()?.modified().ok()?, std::fs::read_to_string(e.path()).ok()?))
                    })
                    .filter(|(_, text)| text.contains(&format!("To: {to}")))
                    .collect()
            })
            .unwrap_or_default();
        mails.sort();
        if let Some((_, text)) = mails.get(nth) {
            return text.clone();
        }
        assert!(Instant::now() < deadline, "no mail #{nth} to {to} in {}", dir.join("mail").display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// demo-cafe invites a new person; the mail lands in DIR/mail/ with a link where they
/// choose their own password; demo-bistro invites them too and they accept with it.
async fn an_invitation_lands_in_the_mail_directory(dev: &Value, dir: &Path) {
    use crate::helpers::{hosted_get, hosted_post};
    let url = dev["graphql_url"].as_str().unwrap();
    let base = url.trim_end_matches("/graphql");
    let email = "new.barista@example.com";
    let invite =
        format!("mutation {{ addStaff(input: {{ email: \"{email}\", permissions: [ORDERS_QUEUE] }}) {{ status }} }}");
    for (venue, nth) in [(0, 0), (1, 1)] {
        let invited = query(url, Some(token(dev, venue, "everything")), &invite).await;
        assert_eq!(invited["data"]["addStaff"]["status"], "INVITED", "{invited}");
        let mail =
            crate::smtp::Received { from: String::new(), to: vec![email.into()], data: mail_file(dir, email, nth) };
        let (link, _) = mail.link("/oauth/invitation");
        let client = reqwest::Client::new();
        let page = hosted_get(&client, &link).await;
        assert_eq!(page.status, 200, "{}", page.html);
        let password = "Barista-Own-Pass-1";
        let step: &[(&str, &str)] = if nth == 0 {
            &[("step", "create"), ("password", password), ("password2", password)]
        } else {
            &[("step", "signin"), ("password", password)]
        };
        let done = hosted_post(&client, base, "/oauth/invitation", &page, step).await;
        assert!(done.html.contains("id=\"accepted\""), "{}", done.html);
    }
}
