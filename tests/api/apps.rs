//! The reference apps of `examples/` in a real browser, as a venue's front-end developer
//! meets them: `venueql dev` serves the kitchen display and the ordering page, each on
//! its own origin. The manager signs in to the kitchen (PKCE through the hosted login,
//! tokens from the token endpoint across origins), a diner orders and pays on the other
//! page, the order appears in the kitchen live (graphql-transport-ws) and is advanced.
//! The apps are built by scripts/test.sh (`npm ci && npm run build` in examples/).

use serde_json::Value;

use crate::dev::{query, start_with, stop, token};
use crate::webdriver::Browser;

fn url<'a>(dev: &'a Value, app: &str) -> &'a str {
    dev["apps"][app].as_str().unwrap_or_else(|| panic!("dev.json has no apps.{app}: {dev}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_on_the_ordering_page_appears_live_in_the_kitchen_and_is_advanced() {
    venueql::app::install_tls_provider();
    let dir = std::env::temp_dir().join(format!("venueql-apps-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // Access tokens live 62 s, so the kitchen refreshes its session (a minute before
    // expiry) while the test runs.
    let run = start_with(&dir, &[("ACCESS_TOKEN_TTL_SECS", "62")]);
    let dev = run.dev_json.clone();
    assert_eq!(
        dev["apps"]["built"], true,
        "the example apps are not built: run scripts/test.sh, or `npm ci && npm run build` in examples/"
    );
    let (kitchen, order) = (url(&dev, "kitchen_url"), url(&dev, "order_url"));
    let api = dev["graphql_url"].as_str().unwrap();
    assert_ne!(url::Url::parse(kitchen).unwrap().origin(), url::Url::parse(api).unwrap().origin());
    assert_ne!(url::Url::parse(order).unwrap().origin(), url::Url::parse(api).unwrap().origin());

    let browser = Browser::start().await;
    // The kitchen: sign in through the hosted login; demo-cafe's own app asks no venue.
    browser.go(kitchen).await;
    browser.click("#sign-in").await;
    browser.type_into("#email", dev["manager"]["email"].as_str().unwrap()).await;
    browser.type_into("#password", dev["manager"]["password"].as_str().unwrap()).await;
    browser.screenshot("apps-1-sign-in").await;
    browser.click("button[type=submit]").await;
    browser.wait_for_text("#venue", "Demo Café").await;
    browser.wait_for_text("#live", "live").await;
    assert!(browser.url().await.starts_with(kitchen), "back on the kitchen's origin");
    browser.screenshot("apps-2-kitchen").await;
    let kitchen_tab = browser.current_tab().await;
    let stored = "return JSON.parse(sessionStorage.getItem('venueql.kitchen.tokens')).refresh";
    let first_refresh = browser.run_script(stored).await;
    assert!(first_refresh.is_string(), "the kitchen keeps its session in sessionStorage: {first_refresh}");

    // The diner, on the ordering page's origin: menu, basket, checkout, payment.
    let order_tab = browser.new_tab().await;
    browser.switch_to(&order_tab).await;
    browser.go(order).await;
    browser.click("button[data-add=\"Espresso\"]").await;
    browser.click("button[data-add=\"Peanut Butter Toast\"]").await;
    browser.type_into("#table", "T4").await;
    browser.click("#allergies summary").await;
    browser.type_into("#email", "diner@example.com").await;
    browser.click("input[data-allergen=\"PEANUTS\"]").await;
    browser.click("#checkout").await;
    browser.wait_for_text("#pay", "Pay").await;
    browser.screenshot("apps-3-checkout").await;
    browser.click("#pay").await;
    let placed = browser.wait_for_text("#status", "is with the kitchen").await;
    browser.screenshot("apps-4-ordered").await;
    let number: String = placed.split('#').nth(1).unwrap().chars().take_while(char::is_ascii_digit).collect();
    let number_value: i64 = number.parse().unwrap();

    // Back in the kitchen, without a reload: the order arrived over the subscription.
    browser.switch_to(&kitchen_tab).await;
    // By now the kitchen has rotated its refresh token at least once (across origins).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while browser.run_script(stored).await == first_refresh {
        assert!(std::time::Instant::now() < deadline, "the kitchen never refreshed its session");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let card = format!("li[data-order=\"{number}\"]");
    let shown = browser.wait_for_text(&card, "Peanut Butter Toast").await;
    assert!(shown.contains("table T4") && shown.contains("PLACED"), "{shown}");
    // The manager may see diners' allergens: the peanut toast is flagged.
    assert!(shown.contains("⚠ Peanut Butter Toast: peanuts"), "{shown}");
    browser.click(&format!("{card} button[data-advance=\"PREPARING\"]")).await;
    browser.wait_for_text(&card, "PREPARING").await;
    browser.screenshot("apps-5-advanced").await;
    browser.quit().await;

    let everything = token(&dev, 0, "everything");
    let queue = query(api, Some(everything), "{ ordersQueue { number status tableRef } }").await;
    let listed = queue["data"]["ordersQueue"].as_array().unwrap();
    let ours = listed.iter().find(|o| o["number"] == number_value).unwrap_or_else(|| panic!("{queue}"));
    assert_eq!(ours["status"], "PREPARING");
    assert_eq!(ours["tableRef"], "T4");
    stop(run, &dir);
    let _ = std::fs::remove_dir_all(&dir);
}
