//! A local stand-in for Stripe's API on loopback, for the tests, the benchmark and
//! `venueql dev` (this machine cannot reach Stripe). It speaks Stripe's wire format and
//! checks every request against Stripe's OpenAPI spec for the pinned version
//! (`stripe/api-subset.json`, cut from Stripe's spec by `scripts/trim-stripe-spec.py`):
//! known path and method, known parameters (nested ones too), required ones present,
//! enum and scalar types; plus the secret key, `Stripe-Version` and an `Idempotency-Key`
//! on every POST. A request that breaks a rule gets Stripe's `invalid_request_error` and
//! is recorded as a violation. Answers are Stripe's fixture objects with the request's
//! values filled in; idempotency keys replay the first answer as Stripe does.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::stripe::API_VERSION;

/// How many requests [`LocalStripe::requests`] remembers.
const MAX_RECORDED: usize = 10_000;

const SPEC: &str = include_str!("../../stripe/api-subset.json");
const FIXTURES: &str = include_str!("../../stripe/fixtures.json");

/// One request the local Stripe received.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// `GET` or `POST`.
    pub method: String,
    /// The path, e.g. `/v1/payment_intents`.
    pub path: String,
    /// Form or query parameters, in order.
    pub params: Vec<(String, String)>,
    /// The `Idempotency-Key` header.
    pub idempotency_key: Option<String>,
}

impl Recorded {
    /// The value of one parameter.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Inner {
    objects: HashMap<String, Value>,
    idempotent: HashMap<String, (String, u16, Value)>,
    requests: VecDeque<Recorded>,
    violations: Vec<String>,
    failures: VecDeque<u16>,
}

struct Shared {
    spec: Value,
    fixtures: Value,
    base: String,
    inner: Mutex<Inner>,
}

/// A running local Stripe; stops when dropped.
pub struct LocalStripe {
    shared: Arc<Shared>,
    base: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl LocalStripe {
    /// Starts on a free loopback port.
    pub async fn start() -> std::io::Result<LocalStripe> {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        let base = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            spec: serde_json::from_str(SPEC).expect("the bundled Stripe spec is JSON"),
            fixtures: serde_json::from_str(FIXTURES).expect("the bundled Stripe fixtures are JSON"),
            base: base.clone(),
            inner: Mutex::new(Inner::default()),
        });
        let router = axum::Router::new().fallback(handle).with_state(shared.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(LocalStripe { shared, base, _stop: stop })
    }

    /// The base URL to use as `STRIPE_API_BASE`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The requests received so far (the newest 10,000).
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.inner.lock().unwrap().requests.iter().cloned().collect()
    }

    /// Every rule a request broke so far (empty when venueql spoke Stripe correctly).
    pub fn violations(&self) -> Vec<String> {
        self.shared.inner.lock().unwrap().violations.clone()
    }

    /// Makes the next `count` requests fail with `status` (429 or 5xx: retry tests).
    pub fn fail_next(&self, status: u16, count: usize) {
        let mut inner = self.shared.inner.lock().unwrap();
        inner.failures.extend(std::iter::repeat_n(status, count));
    }

    /// An object by id (`pi_…`, `acct_…`, `re_…`).
    pub fn object(&self, id: &str) -> Option<Value> {
        self.shared.inner.lock().unwrap().objects.get(id).cloned()
    }

    /// The first stored object `matches` accepts.
    pub fn find(&self, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        self.shared.inner.lock().unwrap().objects.values().find(|o| matches(o)).cloned()
    }

    /// Stores an object (an event for `GET /v1/events/{id}`, or a changed PaymentIntent).
    pub fn put(&self, object: Value) {
        let id = object["id"].as_str().expect("a Stripe object has an id").to_string();
        self.shared.inner.lock().unwrap().objects.insert(id, object);
    }

    /// Changes fields of a stored object, returning the result.
    pub fn update(&self, id: &str, fields: Value) -> Option<Value> {
        let mut inner = self.shared.inner.lock().unwrap();
        let object = inner.objects.get_mut(id)?;
        merge(object, &fields);
        Some(object.clone())
    }
}

/// A Stripe-shaped event around `object`, as Stripe renders it for the pinned version.
pub fn event(event_type: &str, object: Value, account: Option<&str>) -> Value {
    let mut event = json!({
        "id": format!("evt_{}", random_id(24)),
        "object": "event",
        "api_version": API_VERSION,
        "created": chrono::Utc::now().timestamp(),
        "data": { "object": object },
        "livemode": false,
        "pending_webhooks": 1,
        "request": { "id": null, "idempotency_key": null },
        "type": event_type,
    });
    if let Some(account) = account {
        event["account"] = json!(account);
    }
    event
}

/// A random Stripe-style id suffix (letters and digits).
pub fn random_id(length: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; length];
    getrandom::fill(&mut bytes).expect("the OS random source is available");
    bytes.iter().map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect()
}

fn merge(target: &mut Value, fields: &Value) {
    if let (Some(target), Some(fields)) = (target.as_object_mut(), fields.as_object()) {
        for (key, value) in fields {
            target.insert(key.clone(), value.clone());
        }
    }
}

fn stripe_error(status: StatusCode, kind: &str, code: Option<&str>, message: String) -> (u16, Value) {
    (status.as_u16(), json!({ "error": { "type": kind, "code": code, "message": message } }))
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_string();
    let params: Vec<(String, String)> = if method == Method::GET {
        serde_urlencoded::from_str(uri.query().unwrap_or("")).unwrap_or_default()
    } else {
        serde_urlencoded::from_bytes(&body).unwrap_or_default()
    };
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let idempotency_key = header("idempotency-key");
    let recorded = Recorded { method: method.to_string(), path: path.clone(), params: params.clone(), idempotency_key };
    let (status, answer) = answer(&shared, &recorded, &header);
    let mut response =
        (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), axum::Json(answer)).into_response();
    response.headers_mut().insert("request-id", format!("req_{}", random_id(14)).parse().expect("ascii"));
    response
}

fn answer(shared: &Shared, request: &Recorded, header: &dyn Fn(&str) -> Option<String>) -> (u16, Value) {
    let mut inner = shared.inner.lock().unwrap();
    // The newest requests only: a long `venueql dev` or bench run must not grow forever.
    if inner.requests.len() == MAX_RECORDED {
        inner.requests.pop_front();
    }
    inner.requests.push_back(request.clone());
    if let Some(status) = inner.failures.pop_front() {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return stripe_error(status, "api_error", None, "simulated failure".into());
    }
    let problems = check(shared, request, header);
    if !problems.is_empty() {
        let message = problems.join("; ");
        inner.violations.push(format!("{} {}: {message}", request.method, request.path));
        let status = if message.contains("API key") { StatusCode::UNAUTHORIZED } else { StatusCode::BAD_REQUEST };
        return stripe_error(status, "invalid_request_error", None, message);
    }
    if request.method == "POST" {
        let key = request.idempotency_key.clone().unwrap_or_default();
        let fingerprint = format!("{}?{}", request.path, serde_urlencoded::to_string(&request.params).unwrap());
        if let Some((seen, status, body)) = inner.idempotent.get(&key) {
            if *seen != fingerprint {
                let message =
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.";
                return stripe_error(StatusCode::BAD_REQUEST, "idempotency_error", None, message.into());
            }
            return (*status, body.clone());
        }
        let result = simulate(shared, &mut inner, request);
        inner.idempotent.insert(key, (fingerprint, result.0, result.1.clone()));
        return result;
    }
    simulate(shared, &mut inner, request)
}

/// The operation of the spec matching `method path`, with the path's template.
fn operation<'a>(spec: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    let segments: Vec<&str> = path.split('/').collect();
    spec["paths"].as_object()?.iter().find_map(|(template, operations)| {
        let parts: Vec<&str> = template.split('/').collect();
        let matches = parts.len() == segments.len()
            && parts.iter().zip(&segments).all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
        if matches { operations.get(method.to_ascii_lowercase()) } else { None }
    })
}

fn check(shared: &Shared, request: &Recorded, header: &dyn Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    match header("authorization") {
        Some(value) if value.starts_with("Bearer sk_") || value.starts_with("Bearer rk_") => {}
        _ => problems.push("Invalid API key provided: send `Authorization: Bearer sk_…`".to_string()),
    }
    if header("stripe-version").as_deref() != Some(API_VERSION) {
        problems.push(format!("Stripe-Version must be {API_VERSION}"));
    }
    let Some(operation) = operation(&shared.spec, &request.method, &request.path) else {
        problems.push(format!("Unrecognized request URL ({} {})", request.method, request.path));
        return problems;
    };
    if request.method == "POST" {
        if request.idempotency_key.as_deref().is_none_or(str::is_empty) {
            problems.push("every POST must carry an Idempotency-Key".into());
        }
        if header("content-type").as_deref() != Some("application/x-www-form-urlencoded") {
            problems.push("the body must be application/x-www-form-urlencoded".into());
        }
        let schema = &operation["form"];
        for (key, value) in &request.params {
            let path = bracket_path(key);
            if let Err(problem) = check_value(schema, &path, value) {
                problems.push(format!("{key}: {problem}"));
            }
        }
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let present =
                request.params.iter().any(|(k, _)| bracket_path(k).first().map(String::as_str) == Some(required));
            if !present {
                problems.push(format!("Missing required param: {required}."));
            }
        }
    } else {
        let known: Vec<&str> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .filter_map(|p| p["name"].as_str())
            .collect();
        for (key, _) in &request.params {
            let top = bracket_path(key).into_iter().next().unwrap_or_default();
            if !known.contains(&top.as_str()) {
                problems.push(format!("Received unknown parameter: {key}"));
            }
        }
    }
    problems
}

/// `a[b][0][c]` → `["a", "b", "0", "c"]`.
fn bracket_path(key: &str) -> Vec<String> {
    let (head, rest) = key.split_once('[').map_or((key, ""), |(h, r)| (h, r));
    let mut path = vec![head.to_string()];
    path.extend(rest.split('[').filter(|s| !s.is_empty()).map(|s| s.trim_end_matches(']').to_string()));
    path
}

/// Whether `value` at `path` fits `schema` (trying every `anyOf` branch).
fn check_value(schema: &Value, path: &[String], value: &str) -> Result<(), String> {
    if let Some(branches) = schema["anyOf"].as_array() {
        let mut last = "no matching form".to_string();
        for branch in branches {
            match check_value(branch, path, value) {
                Ok(()) => return Ok(()),
                Err(problem) => last = problem,
            }
        }
        return Err(last);
    }
    let Some((first, rest)) = path.split_first() else {
        return check_scalar(schema, value);
    };
    if let Some(items) = schema.get("items") {
        return if first.parse::<usize>().is_ok() || first.is_empty() {
            check_value(items, rest, value)
        } else {
            Err(format!("expected an array index, got {first:?}"))
        };
    }
    if let Some(property) = schema["properties"].get(first) {
        return check_value(property, rest, value);
    }
    match schema.get("additionalProperties") {
        Some(Value::Object(extra)) => check_value(&Value::Object(extra.clone()), rest, value),
        Some(Value::Bool(true)) => Ok(()),
        _ => Err(format!("Received unknown parameter: {first}")),
    }
}

fn check_scalar(schema: &Value, value: &str) -> Result<(), String> {
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.iter().any(|a| a.as_str() == Some(value))
    {
        return Err(format!("Invalid value {value:?}; expected one of {allowed:?}"));
    }
    match schema["type"].as_str() {
        Some("integer") if value.parse::<i64>().is_err() => Err(format!("Invalid integer: {value}")),
        Some("boolean") if value != "true" && value != "false" => Err(format!("Invalid boolean: {value}")),
        Some("object") | Some("array") if !value.is_empty() => Err("expected a nested object or array".into()),
        _ => Ok(()),
    }
}

/// Nested form parameters as a JSON object (`metadata[a]=b` → `{"metadata": {"a": "b"}}`).
fn nested(params: &[(String, String)]) -> Map<String, Value> {
    let mut root = Map::new();
    for (key, value) in params {
        let path = bracket_path(key);
        let mut node = &mut root;
        for segment in &path[..path.len() - 1] {
            node = node.entry(segment.clone()).or_insert_with(|| json!({})).as_object_mut().expect("object");
        }
        node.insert(path[path.len() - 1].clone(), json!(value));
    }
    root
}

fn int(params: &Map<String, Value>, name: &str) -> Option<i64> {
    params.get(name).and_then(Value::as_str).and_then(|v| v.parse().ok())
}

fn not_found(kind: &str, id: &str) -> (u16, Value) {
    stripe_error(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        Some("resource_missing"),
        format!("No such {kind}: '{id}'"),
    )
}

fn simulate(shared: &Shared, inner: &mut Inner, request: &Recorded) -> (u16, Value) {
    let params = nested(&request.params);
    let now = chrono::Utc::now().timestamp();
    let segments: Vec<&str> = request.path.trim_start_matches("/v1/").split('/').collect();
    let fixture = |name: &str| shared.fixtures[name].clone();
    match (request.method.as_str(), segments.as_slice()) {
        ("POST", ["accounts"]) => {
            let mut account = fixture("account");
            let id = format!("acct_{}", random_id(16));
            merge(
                &mut account,
                &json!({
                    "id": id, "type": params.get("type").cloned().unwrap_or(json!("express")),
                    "charges_enabled": false, "payouts_enabled": false, "details_submitted": false,
                    "created": now, "email": params.get("email").cloned().unwrap_or(Value::Null),
                    "country": params.get("country").cloned().unwrap_or(json!("IE")),
                    "metadata": params.get("metadata").cloned().unwrap_or(json!({})),
                }),
            );
            account["requirements"]["currently_due"] =
                json!(["business_type", "external_account", "tos_acceptance.date"]);
            account["requirements"]["disabled_reason"] = json!("requirements.past_due");
            inner.objects.insert(id, account.clone());
            (200, account)
        }
        ("GET", ["accounts", id]) => {
            inner.objects.get(*id).cloned().map_or_else(|| not_found("account", id), |a| (200, a))
        }
        ("POST", ["account_links"]) => {
            let account = params.get("account").and_then(Value::as_str).unwrap_or_default().to_string();
            if !inner.objects.contains_key(&account) {
                return not_found("account", &account);
            }
            let url = format!("{}/setup/s/{account}/{}", shared.base, random_id(12));
            (200, json!({ "object": "account_link", "created": now, "expires_at": now + 300, "url": url }))
        }
        ("POST", ["payment_intents"]) => {
            let mut intent = fixture("payment_intent");
            let id = format!("pi_{}", random_id(24));
            merge(
                &mut intent,
                &json!({
                    "id": id, "client_secret": format!("{id}_secret_{}", random_id(25)), "created": now,
                    "amount": int(&params, "amount"), "currency": params["currency"],
                    "status": "requires_payment_method", "canceled_at": null, "amount_received": 0,
                    "metadata": params.get("metadata").cloned().unwrap_or(json!({})),
                    "application_fee_amount": int(&params, "application_fee_amount"),
                    "on_behalf_of": params.get("on_behalf_of").cloned().unwrap_or(Value::Null),
                    "transfer_data": params.get("transfer_data").map(|t| json!({ "destination": t["destination"] })),
                    "latest_charge": null,
                }),
            );
            inner.objects.insert(id, intent.clone());
            (200, intent)
        }
        ("GET", ["payment_intents", id]) => {
            inner.objects.get(*id).cloned().map_or_else(|| not_found("payment_intent", id), |p| (200, p))
        }
        ("POST", ["payment_intents", id, action @ ("cancel" | "confirm")]) => {
            let Some(intent) = inner.objects.get_mut(*id) else {
                return not_found("payment_intent", id);
            };
            let status = intent["status"].as_str().unwrap_or_default().to_string();
            if status == "succeeded" || status == "canceled" {
                let message = format!("This PaymentIntent's status is {status}, so it cannot be {action}ed.");
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("payment_intent_unexpected_state"),
                    message,
                );
            }
            if *action == "cancel" {
                merge(
                    intent,
                    &json!({ "status": "canceled", "canceled_at": now,
                    "cancellation_reason": params.get("cancellation_reason").cloned().unwrap_or(Value::Null) }),
                );
            } else {
                let amount = intent["amount"].clone();
                merge(
                    intent,
                    &json!({ "status": "succeeded", "amount_received": amount,
                    "latest_charge": format!("ch_{}", random_id(24)) }),
                );
            }
            (200, intent.clone())
        }
        ("POST", ["refunds"]) => {
            let intent_id = params.get("payment_intent").and_then(Value::as_str).unwrap_or_default().to_string();
            let Some(intent) = inner.objects.get(&intent_id).cloned() else {
                return not_found("payment_intent", &intent_id);
            };
            if intent["status"] != "succeeded" {
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("charge_not_refundable"),
                    "This PaymentIntent has no successful charge to refund.".into(),
                );
            }
            let received = intent["amount_received"].as_i64().unwrap_or(0);
            let refunded: i64 = inner
                .objects
                .values()
                .filter(|o| o["object"] == "refund" && o["payment_intent"] == intent_id.as_str())
                .filter_map(|o| o["amount"].as_i64())
                .sum();
            let amount = int(&params, "amount").unwrap_or(received - refunded);
            if amount <= 0 || refunded + amount > received {
                let message = format!(
                    "Refund amount ({amount}) is greater than unrefunded amount on charge ({})",
                    received - refunded
                );
                return stripe_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    Some("amount_too_large"),
                    message,
                );
            }
            let mut refund = fixture("refund");
            let id = format!("re_{}", random_id(24));
            merge(
                &mut refund,
                &json!({
                    "id": id, "amount": amount, "currency": intent["currency"], "created": now,
                    "payment_intent": intent_id, "charge": intent["latest_charge"], "status": "pending",
                    "metadata": params.get("metadata").cloned().unwrap_or(json!({})),
                    "reason": params.get("reason").cloned().unwrap_or(Value::Null),
                }),
            );
            inner.objects.insert(id, refund.clone());
            (200, refund)
        }
        ("GET", ["refunds", id]) => {
            inner.objects.get(*id).cloned().map_or_else(|| not_found("refund", id), |r| (200, r))
        }
        ("GET", ["events", id]) => inner.objects.get(*id).cloned().map_or_else(|| not_found("event", id), |e| (200, e)),
        _ => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            None,
            format!("Unrecognized request URL ({} {})", request.method, request.path),
        ),
    }
}
