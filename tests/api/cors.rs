//! CORS at every browser door: an SPA client's origins for the token endpoint, the staff
//! API and subscriptions (checked against the very client a token belongs to), a venue's
//! origins for its public endpoint; preflights cached, no wildcard, no credentials, and a
//! refused origin runs nothing.

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use venueql::auth::authorization_code::s256_challenge;

use crate::oauth::{EMAIL, OAuthSetup, PASSWORD, REDIRECT, code_for, query_param, setup, verifier};

const KITCHEN: &str = "http://127.0.0.1:5173";
const OTHER_APP: &str = "https://other-app.example.com";
const DINER_PAGE: &str = "https://alpha-cafe.example.com";
const STRANGER: &str = "https://evil.example.com";
const ME: &str = r#"{"query":"{ me { venue { slug } } }"}"#;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn allows(&self, origin: &str) -> bool {
        self.header("access-control-allow-origin") == Some(origin)
    }

    fn varies_by_origin(&self) -> bool {
        self.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().to_ascii_lowercase().contains("origin"))
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let text = response.text().await.unwrap();
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

async fn preflight(s: &OAuthSetup, path: &str, origin: &str) -> Answer {
    let request = s
        .app
        .client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", s.app.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "authorization, content-type");
    send(request).await
}

async fn graphql(s: &OAuthSetup, origin: Option<&str>, token: &str, path: &str, body: &str) -> Answer {
    let mut request = s
        .app
        .client
        .post(format!("{}{path}", s.app.base))
        .header("content-type", "application/json")
        .body(body.to_string());
    if !token.is_empty() {
        request = request.bearer_auth(token);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    send(request).await
}

async fn token_call(s: &OAuthSetup, origin: &str, form: &[(&str, &str)]) -> Answer {
    let request = s.app.client.post(format!("{}/oauth/token", s.app.base)).header("origin", origin).form(form);
    send(request).await
}

/// The alpha SPA served from KITCHEN, a second SPA client from OTHER_APP, and alpha's
/// diner page at DINER_PAGE.
async fn registered() -> OAuthSetup {
    let s = setup().await;
    let actor = "operator:test";
    venueql::admin::update_client(&s.app.door, actor, &s.spa, &[REDIRECT.to_string()], &[KITCHEN.to_string()])
        .await
        .unwrap();
    let other = venueql::auth::clients::NewClient {
        kind: "spa",
        name: "Other app",
        redirect_uris: &[format!("{OTHER_APP}/callback")],
        allowed_origins: &[OTHER_APP.to_string()],
        permissions: venueql::access::Permissions::empty(),
    };
    venueql::admin::create_client(&s.app.door, actor, &other, None).await.unwrap();
    let settings = s
        .app
        .gql(
            &s.app.a.full,
            "mutation($o: [String!]!) { updateVenueSettings(input: { allowedOrigins: $o }) { allowedOrigins } }",
            json!({ "o": [DINER_PAGE] }),
        )
        .await;
    assert_eq!(settings["data"]["updateVenueSettings"]["allowedOrigins"], json!([DINER_PAGE]), "{settings}");
    s
}

/// Signs in through the hosted login and exchanges the code from the kitchen's origin,
/// as the kitchen app does; returns the token answer.
async fn kitchen_tokens(s: &OAuthSetup) -> Value {
    let verifier = verifier();
    let code = code_for(s, s.app.a.id, &verifier).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
        ("client_id", s.spa.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let answer = token_call(s, KITCHEN, &form).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert!(answer.allows(KITCHEN), "the kitchen can read its tokens");
    answer.body
}

#[tokio::test]
async fn the_token_endpoint_and_staff_api_answer_only_the_origins_of_the_tokens_client() {
    let s = registered().await;
    // Preflights: a registered origin is told what it may send, for ten minutes; a
    // stranger is refused and told nothing.
    for path in ["/oauth/token", "/graphql", "/oauth/revoke"] {
        let allowed = preflight(&s, path, KITCHEN).await;
        assert_eq!(allowed.status, StatusCode::NO_CONTENT, "{path}: {}", allowed.body);
        assert!(allowed.allows(KITCHEN), "{path}");
        assert_eq!(allowed.header("access-control-allow-methods"), Some("POST"));
        assert!(allowed.header("access-control-allow-headers").unwrap().contains("authorization"));
        assert_eq!(allowed.header("access-control-max-age"), Some("600"));
        assert_eq!(allowed.header("access-control-allow-credentials"), None, "tokens travel in headers");
        assert!(allowed.varies_by_origin());
        let refused = preflight(&s, path, STRANGER).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(refused.header("access-control-allow-origin"), None, "{path}");
    }

    let tokens = kitchen_tokens(&s).await;
    let access = tokens["access_token"].as_str().unwrap();
    let ok = graphql(&s, Some(KITCHEN), access, "/graphql", ME).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.body["data"]["me"]["venue"]["slug"], "alpha", "{}", ok.body);
    assert!(ok.allows(KITCHEN) && ok.varies_by_origin());
    assert!(ok.header("access-control-expose-headers").unwrap().contains("retry-after"));
    // The same token from another SPA's (registered) origin: refused, readable, nothing run.
    let elsewhere = graphql(&s, Some(OTHER_APP), access, "/graphql", ME).await;
    assert_eq!(elsewhere.status, StatusCode::FORBIDDEN, "{}", elsewhere.body);
    assert!(elsewhere.body.to_string().contains("not one of the allowed origins"), "{}", elsewhere.body);
    // A venue API token is a server credential: never from a browser on another origin.
    let api_token = graphql(&s, Some(KITCHEN), &s.app.a.full, "/graphql", ME).await;
    assert_eq!(api_token.status, StatusCode::FORBIDDEN, "{}", api_token.body);
    // A stranger's origin never reaches the handler, and cannot read the refusal.
    let stranger = graphql(&s, Some(STRANGER), access, "/graphql", ME).await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    assert_eq!(stranger.header("access-control-allow-origin"), None);
    // Servers (no Origin) and pages on venueql's own origin are not affected.
    let server = graphql(&s, None, &s.app.a.full, "/graphql", ME).await;
    assert_eq!(server.status, StatusCode::OK);
    assert_eq!(server.header("access-control-allow-origin"), None);
    let own = graphql(&s, Some(&s.app.base), &s.app.a.full, "/graphql", ME).await;
    assert_eq!(own.status, StatusCode::OK, "{}", own.body);

    // The token endpoint checks the origin against the client named in the request.
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh), ("client_id", s.spa.as_str())];
    let wrong = token_call(&s, OTHER_APP, &form).await;
    assert_eq!(wrong.body["error"], "unauthorized_client", "{}", wrong.body);
    let stranger = token_call(&s, STRANGER, &form).await;
    assert_eq!(stranger.status, StatusCode::FORBIDDEN);
    assert_eq!(stranger.header("access-control-allow-origin"), None);
    let refreshed = token_call(&s, KITCHEN, &form).await;
    assert_eq!(refreshed.status, StatusCode::OK, "the refused attempts used nothing up: {}", refreshed.body);
    assert!(refreshed.allows(KITCHEN));

    // The discovery document is public: any origin may read it.
    let metadata = send(
        s.app.client.get(format!("{}/.well-known/oauth-authorization-server", s.app.base)).header("origin", STRANGER),
    )
    .await;
    assert_eq!(metadata.header("access-control-allow-origin"), Some("*"));
}

#[tokio::test]
async fn a_venues_public_endpoint_answers_its_own_diner_pages_and_nobody_elses() {
    let s = registered().await;
    s.app.onboard(&s.app.a).await;
    let menu = r#"{"query":"{ menu { categories { name } } }"}"#;
    let allowed = preflight(&s, "/v/alpha/graphql", DINER_PAGE).await;
    assert_eq!(allowed.status, StatusCode::NO_CONTENT);
    assert!(allowed.allows(DINER_PAGE));
    let read = graphql(&s, Some(DINER_PAGE), "", "/v/alpha/graphql", menu).await;
    assert!(read.allows(DINER_PAGE), "{}", read.body);
    assert!(read.body["data"]["menu"].is_object(), "{}", read.body);
    // Bravo lists no origin: alpha's page cannot call it, nor can an SPA's origin.
    for (path, origin) in [("/v/bravo/graphql", DINER_PAGE), ("/v/alpha/graphql", KITCHEN)] {
        let refused = preflight(&s, path, origin).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN, "{path} {origin}");
        assert_eq!(refused.header("access-control-allow-origin"), None);
    }
    // A refused origin's checkout (sent without a preflight, as a form could) runs nothing.
    let item = s.app.a.item_ids[0];
    let checkout = json!({ "query": format!(
        "mutation {{ startCheckout(input: {{ items: [{{ menuItemId: \"{item}\", quantity: 1 }}] }}) {{ checkoutId }} }}") });
    let before = s.app.stripe.requests().len();
    let refused = graphql(&s, Some(STRANGER), "", "/v/alpha/graphql", &checkout.to_string()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.body);
    assert_eq!(s.app.stripe.requests().len(), before, "no PaymentIntent for a refused origin");
    let accepted = graphql(&s, Some(DINER_PAGE), "", "/v/alpha/graphql", &checkout.to_string()).await;
    assert!(accepted.body["data"]["startCheckout"]["checkoutId"].is_string(), "{}", accepted.body);
    assert!(accepted.allows(DINER_PAGE));
}

#[tokio::test]
async fn origins_are_validated_and_a_removed_origin_stops_working_at_once() {
    let s = registered().await;
    let create = "mutation($o: [String!]!) { createApiClient(input: { name: \"Till app\", kind: SPA, \
        redirectUris: [\"https://till.example.com/\"], allowedOrigins: $o }) { client { id allowedOrigins } clientSecret } }";
    for bad in ["*", "https://*.example.com", "http://till.example.com", "https://till.example.com/app", "null"] {
        let refused = s.app.gql(&s.app.a.full, create, json!({ "o": [bad] })).await;
        assert_eq!(crate::helpers::error_code(&refused), "BAD_USER_INPUT", "{bad}: {refused}");
    }
    let settings = "mutation($o: [String!]!) { updateVenueSettings(input: { allowedOrigins: $o }) { allowedOrigins } }";
    let refused = s.app.gql(&s.app.a.full, settings, json!({ "o": ["https://*.example.com"] })).await;
    assert_eq!(crate::helpers::error_code(&refused), "BAD_USER_INPUT", "{refused}");
    let created = s.app.gql(&s.app.a.full, create, json!({ "o": ["https://Till.Example.com:443"] })).await;
    let client = &created["data"]["createApiClient"];
    assert_eq!(client["client"]["allowedOrigins"], json!(["https://till.example.com"]), "{created}");
    assert_eq!(client["clientSecret"], Value::Null, "an SPA client is public");

    let tokens = kitchen_tokens(&s).await;
    let access = tokens["access_token"].as_str().unwrap();
    assert_eq!(graphql(&s, Some(KITCHEN), access, "/graphql", ME).await.status, StatusCode::OK);
    venueql::admin::update_client(&s.app.door, "operator:test", &s.spa, &[REDIRECT.to_string()], &[]).await.unwrap();
    let gone = graphql(&s, Some(KITCHEN), access, "/graphql", ME).await;
    assert_eq!(gone.status, StatusCode::FORBIDDEN, "{}", gone.body);
    assert_eq!(graphql(&s, None, access, "/graphql", ME).await.status, StatusCode::OK, "the token itself still works");
}

#[tokio::test]
async fn a_venues_own_spa_signs_people_in_to_that_venue_only() {
    let s = registered().await;
    let create = "mutation { createApiClient(input: { name: \"Bravo kitchen\", kind: SPA, \
        redirectUris: [\"http://127.0.0.1:5999/\"], allowedOrigins: [\"http://127.0.0.1:5999\"] }) { client { id } } }";
    let created = s.app.gql(&s.app.b.full, create, json!({})).await;
    let bravo_app = created["data"]["createApiClient"]["client"]["id"].as_str().unwrap().to_string();
    // The person works at alpha and bravo; through bravo's app, only bravo is offered.
    let bravo_setup = OAuthSetup { spa: bravo_app.clone(), ..s };
    let verifier = verifier();
    let mut url = url::Url::parse(&format!("{}/oauth/authorize", bravo_setup.app.base)).unwrap();
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &bravo_app)
        .append_pair("redirect_uri", "http://127.0.0.1:5999/")
        .append_pair("code_challenge", &s256_challenge(&verifier))
        .append_pair("code_challenge_method", "S256");
    let (status, location, body) = login_at(&bravo_setup, url.as_str(), EMAIL, PASSWORD, None).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "the only venue of this app is chosen: {body}");
    let code = query_param(&location, "code").unwrap();
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", "http://127.0.0.1:5999/"),
        ("client_id", bravo_app.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    let tokens = token_call(&bravo_setup, "http://127.0.0.1:5999", &form).await;
    let access = tokens.body["access_token"].as_str().unwrap_or_else(|| panic!("{}", tokens.body));
    let me = graphql(&bravo_setup, Some("http://127.0.0.1:5999"), access, "/graphql", ME).await;
    assert_eq!(me.body["data"]["me"]["venue"]["slug"], "bravo", "{}", me.body);
}

/// Drives the hosted login at `url` (password, then the venue choice with `venue` when
/// one is asked for).
async fn login_at(
    s: &OAuthSetup,
    url: &str,
    email: &str,
    password: &str,
    venue: Option<uuid::Uuid>,
) -> (StatusCode, String, String) {
    let client = crate::oauth::no_redirects();
    let page = client.get(url).send().await.unwrap();
    let cookie = page.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let html = page.text().await.unwrap();
    let mut form: Vec<(String, String)> =
        ["client_id", "redirect_uri", "response_type", "code_challenge", "code_challenge_method", "csrf"]
            .iter()
            .filter_map(|n| Some((n.to_string(), crate::oauth::hidden(&html, n)?)))
            .collect();
    form.extend([
        ("step".into(), "password".into()),
        ("email".into(), email.into()),
        ("password".into(), password.into()),
    ]);
    if let Some(venue) = venue {
        form.push(("venue_id".into(), venue.to_string()));
    }
    let response = client
        .post(format!("{}/oauth/authorize", s.app.base))
        .header("cookie", cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let location = response.headers().get("location").map(|l| l.to_str().unwrap().to_string()).unwrap_or_default();
    (status, location, response.text().await.unwrap())
}

/// Opens `/graphql/ws` from `origin` and sends `connection_init` with `token`; returns the
/// handshake status, or the server's first answer after the handshake.
async fn socket_from(s: &OAuthSetup, origin: &str, token: &str) -> Result<Option<Value>, u16> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/graphql/ws", s.app.base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().unwrap());
    request.headers_mut().insert("origin", origin.parse().unwrap());
    let mut socket = match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => return Err(response.status().as_u16()),
        Err(other) => panic!("{other}"),
    };
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(tokio_tungstenite::tungstenite::Message::Text(init.to_string().into())).await.unwrap();
    Ok(crate::subscription::next_json(&mut socket, std::time::Duration::from_secs(5)).await)
}

#[tokio::test]
async fn subscriptions_from_a_browser_need_an_origin_of_the_tokens_client() {
    let s = registered().await;
    assert_eq!(socket_from(&s, STRANGER, &s.app.a.full).await, Err(403), "a stranger's page cannot even connect");
    let tokens = kitchen_tokens(&s).await;
    let access = tokens["access_token"].as_str().unwrap();
    let acked = socket_from(&s, KITCHEN, access).await.unwrap().unwrap();
    assert_eq!(acked["type"], "connection_ack", "{acked}");
    // From another SPA's origin, or with a venue API token, the socket is closed at init.
    for (origin, token) in [(OTHER_APP, access), (KITCHEN, s.app.a.full.as_str())] {
        let refused = socket_from(&s, origin, token).await.unwrap();
        assert_ne!(refused.as_ref().map(|m| m["type"].clone()), Some(json!("connection_ack")), "{origin}: {refused:?}");
    }
}
