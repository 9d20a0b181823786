//! `venueql verify-isolation`: the cross-tenant check for operators and auditors, run
//! against a live deployment with two venues' tokens. It reads the staff schema by
//! introspection (or from a saved introspection result), collects venue A's ids with A's
//! token, then asks every query and mutation that takes an ID with B's token and A's ids
//! (and again with a person's token of B, when given: person-only fields are reachable
//! only so), asks every field of B's diner endpoint with A's ids and no token, watches
//! every subscription with B's token (A's ids as arguments) while A's own socket watches
//! too, and reports any answer or event that shows one of A's ids and any change to what
//! A's token sees. It needs nothing but HTTP and WebSockets: no database access, no
//! knowledge of the code.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Value, json};

/// What to check.
pub struct Options {
    /// The deployment's base URL (its staff endpoint is `{url}/graphql`).
    pub url: String,
    /// A token of venue A (the venue whose data must not show).
    pub token_a: String,
    /// A token of venue B (the attacker).
    pub token_b: String,
    /// A saved introspection result (JSON) when the deployment has introspection off.
    pub schema: Option<Value>,
    /// At most this many of A's ids are tried per argument.
    pub ids_per_field: usize,
    /// A person's access token at venue B, to attack the fields only a person reaches.
    pub person_token_b: Option<String>,
    /// A saved introspection result of the diner schema, when introspection is off.
    pub public_schema: Option<Value>,
    /// How long B's subscriptions are watched (zero: not watched).
    pub watch: std::time::Duration,
}

/// One thing of A that B could see or change.
#[derive(Serialize, Debug, Clone)]
pub struct Leak {
    /// `query` or `mutation`.
    pub operation: String,
    /// The root field.
    pub field: String,
    /// The id of A that was sent.
    pub id: String,
    /// What showed.
    pub detail: String,
}

/// The result of a run.
#[derive(Serialize, Debug)]
pub struct Report {
    /// The endpoint checked.
    pub endpoint: String,
    /// HTTP requests made.
    pub requests: usize,
    /// A's ids collected with A's token.
    pub venue_a_ids: usize,
    /// Root fields asked with A's ids under B's token.
    pub fields_attacked: Vec<String>,
    /// Root fields with required arguments that no id could fill (not attacked).
    pub fields_skipped: Vec<String>,
    /// How B's requests were answered, per field: the error code (`NOT_FOUND`,
    /// `FORBIDDEN`, …) or `OK`, with counts. A field answered only with validation errors
    /// was not really tried: look here before trusting a clean report.
    pub answers: BTreeMap<String, BTreeMap<String, usize>>,
    /// Leaks found (empty: isolation held).
    pub leaks: Vec<Leak>,
    /// B's diner endpoint, when it was attacked.
    pub diner_endpoint: Option<String>,
    /// What the subscription watch saw.
    pub subscriptions: SubscriptionWatch,
    /// What was not checked, and why.
    pub notes: Vec<String>,
}

/// What the subscription watch saw: B's sockets must never receive A's events.
#[derive(Serialize, Debug, Default)]
pub struct SubscriptionWatch {
    /// Subscription fields B subscribed to (with A's ids where they take one).
    pub fields: Vec<String>,
    /// Seconds watched.
    pub watched_secs: u64,
    /// Events A's own sockets received meanwhile (none: nothing proved either way).
    pub events_a: usize,
    /// Events B's sockets received.
    pub events_b: usize,
}

impl Report {
    /// A human summary of the report.
    pub fn summary(&self) -> String {
        let mut text = format!(
            "verify-isolation {}: {} requests, {} ids of venue A, {} fields attacked, {} skipped: {} leak(s)\n",
            self.endpoint,
            self.requests,
            self.venue_a_ids,
            self.fields_attacked.len(),
            self.fields_skipped.len(),
            self.leaks.len()
        );
        if let Some(diner) = &self.diner_endpoint {
            text.push_str(&format!("  diner endpoint attacked too: {diner}\n"));
        }
        let watch = &self.subscriptions;
        text.push_str(&format!(
            "  subscriptions watched {} s: {} field(s), {} event(s) of A on A's sockets, {} event(s) on B's\n",
            watch.watched_secs,
            watch.fields.len(),
            watch.events_a,
            watch.events_b
        ));
        for note in &self.notes {
            text.push_str(&format!("  note: {note}\n"));
        }
        for leak in &self.leaks {
            text.push_str(&format!("  LEAK {} {} with id {}: {}\n", leak.operation, leak.field, leak.id, leak.detail));
        }
        text
    }
}

/// The standard introspection query, as much of it as the walk needs.
const INTROSPECTION: &str = "query { __schema { queryType { name } mutationType { name } subscriptionType { name } \
    types { kind name \
    fields { name args { name type { ...T } } type { ...T } } inputFields { name type { ...T } } enumValues { name } } } } \
    fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// How deep the walk selects into objects.
const MAX_DEPTH: usize = 3;

struct Schema {
    types: BTreeMap<String, Value>,
    query: String,
    mutation: Option<String>,
    subscription: Option<String>,
}

/// A type reference reduced to what the walk needs.
struct TypeRef<'a> {
    required: bool,
    list: bool,
    kind: &'a str,
    name: &'a str,
}

fn type_ref(value: &Value) -> TypeRef<'_> {
    let mut current = value;
    let required = current["kind"] == "NON_NULL";
    let mut list = false;
    while current["name"].is_null() && !current["ofType"].is_null() {
        if current["kind"] == "LIST" {
            list = true;
        }
        current = &current["ofType"];
    }
    TypeRef {
        required,
        list,
        kind: current["kind"].as_str().unwrap_or(""),
        name: current["name"].as_str().unwrap_or(""),
    }
}

impl Schema {
    fn from_introspection(result: &Value) -> Result<Schema, String> {
        let schema = result.get("data").unwrap_or(result).get("__schema").ok_or("not an introspection result")?;
        let types = schema["types"]
            .as_array()
            .ok_or("the introspection result has no types")?
            .iter()
            .filter_map(|t| Some((t["name"].as_str()?.to_string(), t.clone())))
            .collect();
        Ok(Schema {
            types,
            query: schema["queryType"]["name"].as_str().ok_or("no query type")?.to_string(),
            mutation: schema["mutationType"]["name"].as_str().map(str::to_string),
            subscription: schema["subscriptionType"]["name"].as_str().map(str::to_string),
        })
    }

    fn fields(&self, type_name: &str) -> Vec<&Value> {
        self.types.get(type_name).and_then(|t| t["fields"].as_array()).map(|f| f.iter().collect()).unwrap_or_default()
    }

    /// A selection of every scalar field of `type_name` and of its objects, `depth` deep,
    /// leaving out fields with required arguments.
    fn selection(&self, type_name: &str, depth: usize) -> String {
        let Some(kind) = self.types.get(type_name).and_then(|t| t["kind"].as_str()) else {
            return String::new();
        };
        match kind {
            "OBJECT" => {}
            "UNION" | "INTERFACE" => return "{ __typename }".into(),
            _ => return String::new(),
        }
        let mut parts = vec!["__typename".to_string()];
        for field in self.fields(type_name) {
            let required_args =
                field["args"].as_array().is_some_and(|args| args.iter().any(|a| type_ref(&a["type"]).required));
            if required_args {
                continue;
            }
            let name = field["name"].as_str().unwrap_or("");
            let field_type = type_ref(&field["type"]);
            match field_type.kind {
                "OBJECT" | "INTERFACE" | "UNION" if depth > 1 => {
                    let inner = self.selection(field_type.name, depth - 1);
                    if !inner.is_empty() {
                        parts.push(format!("{name} {inner}"));
                    }
                }
                "OBJECT" | "INTERFACE" | "UNION" => {}
                _ => parts.push(name.to_string()),
            }
        }
        format!("{{ {} }}", parts.join(" "))
    }

    /// A literal for an argument `name` of `ty`, with `id` for every ID; strings are
    /// plausible for their name, so that a check of the value does not stop the request
    /// before the venue check is reached.
    fn literal(&self, name: &str, ty: &Value, id: &str, depth: usize) -> Option<String> {
        let reference = type_ref(ty);
        let single = match (reference.kind, reference.name) {
            (_, "ID") => Some(json!(id).to_string()),
            (_, "String") => Some(json!(plausible_string(name)).to_string()),
            (_, "Int") => Some("1".into()),
            (_, "Float") => Some("1.0".into()),
            (_, "Boolean") => Some("false".into()),
            ("SCALAR", "DateTime") => Some("\"2026-01-01T00:00:00Z\"".into()),
            ("SCALAR", _) => Some("\"isolation-check\"".into()),
            ("ENUM", name) => {
                self.types.get(name)?["enumValues"].as_array()?.first()?["name"].as_str().map(str::to_string)
            }
            ("INPUT_OBJECT", name) if depth > 0 => {
                let mut fields = Vec::new();
                for field in self.types.get(name)?["inputFields"].as_array()? {
                    let field_ref = type_ref(&field["type"]);
                    if field_ref.required || self.takes_id_within(&field["type"], depth) {
                        let name = field["name"].as_str()?;
                        fields.push(format!("{name}: {}", self.literal(name, &field["type"], id, depth - 1)?));
                    }
                }
                Some(format!("{{ {} }}", fields.join(", ")))
            }
            _ => None,
        }?;
        Some(if reference.list { format!("[{single}]") } else { single })
    }

    /// Whether `ty` takes an ID, itself or in an input object it names (two levels down:
    /// `startCheckout(input: { items: [{ menuItemId }] })`).
    fn takes_id(&self, ty: &Value) -> bool {
        self.takes_id_within(ty, 2)
    }

    fn takes_id_within(&self, ty: &Value, depth: usize) -> bool {
        let reference = type_ref(ty);
        reference.name == "ID"
            || (reference.kind == "INPUT_OBJECT"
                && depth > 0
                && self
                    .types
                    .get(reference.name)
                    .and_then(|t| t["inputFields"].as_array())
                    .is_some_and(|fields| fields.iter().any(|f| self.takes_id_within(&f["type"], depth - 1))))
    }
}

/// A string that passes the usual checks of an argument called `name`.
fn plausible_string(name: &str) -> &'static str {
    let name = name.to_ascii_lowercase();
    if name.contains("origin") || name.contains("url") || name.contains("uri") {
        "https://isolation-check.example"
    } else if name.contains("pin") {
        "739164"
    } else if name.contains("email") {
        "isolation-check@example.com"
    } else if name.contains("currency") {
        "EUR"
    } else {
        "isolation-check"
    }
}

struct Client {
    http: reqwest::Client,
    endpoint: String,
    requests: usize,
}

impl Client {
    /// Asks `query` (with `token`, or anonymously at the diner endpoint); a rate-limited
    /// request waits as told (`Retry-After`) and is repeated.
    async fn ask(&mut self, token: Option<&str>, query: &str) -> Result<Value, String> {
        let mut waits = 0;
        let response = loop {
            self.requests += 1;
            let mut request = self.http.post(&self.endpoint).json(&json!({ "query": query }));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| format!("{}: {e}", self.endpoint))?;
            if response.status() != reqwest::StatusCode::TOO_MANY_REQUESTS || waits == 20 {
                break response;
            }
            waits += 1;
            let wait = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(1)
                .clamp(1, 30);
            tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        };
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_server_error() {
            return Err(format!("{} answered {status}: {body}", self.endpoint));
        }
        Ok(body)
    }
}

/// Every ID-like string in `value` (fields named `id` or ending in `Id`).
fn collect_ids(value: &Value, found: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if (key == "id" || key.ends_with("Id")) && inner.is_string() {
                    found.insert(inner.as_str().unwrap_or_default().to_string());
                }
                collect_ids(inner, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_ids(item, found)),
        _ => {}
    }
}

/// Who attacks, at which door.
struct Attacker<'a> {
    /// B's token (None: the anonymous diner endpoint).
    token: Option<&'a str>,
    /// What the report's labels add (e.g. ` (person)`, ` (diner)`).
    label: &'a str,
}

/// Runs the check.
pub async fn run(options: Options) -> Result<Report, String> {
    let base = options.url.trim_end_matches('/').to_string();
    let endpoint = format!("{base}/graphql");
    let http =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
    let mut client = Client { http: http.clone(), endpoint: endpoint.clone(), requests: 0 };
    let introspection = match &options.schema {
        Some(saved) => saved.clone(),
        None => client.ask(Some(&options.token_a), INTROSPECTION).await?,
    };
    let schema = Schema::from_introspection(&introspection).map_err(|e| {
        format!("{e}: is introspection off? Pass a saved introspection result with --schema ({introspection})")
    })?;

    let before = snapshot(&mut client, &schema, &options.token_a).await?;
    let mut a_ids = BTreeSet::new();
    collect_ids(&before, &mut a_ids);
    // What B's tokens see as their own (a person who works at both venues, shared ids) is
    // not A's: B may legitimately read and change it, so it is not tried.
    let mut b_ids = BTreeSet::new();
    collect_ids(&snapshot(&mut client, &schema, &options.token_b).await?, &mut b_ids);
    if let Some(person) = &options.person_token_b {
        collect_ids(&snapshot(&mut client, &schema, person).await?, &mut b_ids);
    }
    let a_ids: Vec<String> = a_ids.difference(&b_ids).cloned().collect();

    let mut report = Report {
        endpoint,
        requests: 0,
        venue_a_ids: a_ids.len(),
        fields_attacked: Vec::new(),
        fields_skipped: Vec::new(),
        answers: BTreeMap::new(),
        leaks: Vec::new(),
        diner_endpoint: None,
        subscriptions: SubscriptionWatch::default(),
        notes: Vec::new(),
    };
    let mut attackers = vec![Attacker { token: Some(options.token_b.as_str()), label: "" }];
    match &options.person_token_b {
        Some(person) => attackers.push(Attacker { token: Some(person.as_str()), label: " (person)" }),
        None => report
            .notes
            .push("fields only a person reaches were tried with B's token alone (pass --person-token-b)".into()),
    }
    for attacker in &attackers {
        attack_schema(&mut client, &schema, &a_ids, &options, attacker, &mut report).await?;
    }
    attack_diner_endpoint(&mut client, &base, &a_ids, &options, &mut report).await?;
    let after = snapshot(&mut client, &schema, &options.token_a).await?;
    for (field, value) in before.as_object().into_iter().flatten() {
        if after.get(field) != Some(value) {
            report.leaks.push(Leak {
                operation: "query".into(),
                field: field.clone(),
                id: String::new(),
                detail: "what venue A's token sees here changed while venue B's token was used".into(),
            });
        }
    }
    report.requests = client.requests;
    // Last: A's own activity during the watch must not count as a change B made.
    watch_subscriptions(&schema, &base, &a_ids, &options, &mut report).await;
    Ok(report)
}

/// Every query and mutation of `schema` that takes an ID, asked as `attacker` with A's ids.
async fn attack_schema(
    client: &mut Client,
    schema: &Schema,
    a_ids: &[String],
    options: &Options,
    attacker: &Attacker<'_>,
    report: &mut Report,
) -> Result<(), String> {
    let roots = [("query", Some(schema.query.clone())), ("mutation", schema.mutation.clone())];
    for (operation, root) in roots {
        let Some(root) = root else { continue };
        for field in schema.fields(&root) {
            attack(client, schema, operation, field, a_ids, options, attacker, report).await?;
        }
    }
    Ok(())
}

/// B's diner endpoint (`/v/{B's slug}/graphql`), asked anonymously with A's ids.
async fn attack_diner_endpoint(
    client: &mut Client,
    base: &str,
    a_ids: &[String],
    options: &Options,
    report: &mut Report,
) -> Result<(), String> {
    let me = client.ask(Some(&options.token_b), "{ me { venue { slug } } }").await?;
    let Some(slug) = me["data"]["me"]["venue"]["slug"].as_str() else {
        report
            .notes
            .push("the diner endpoint was not attacked: B's venue slug could not be read with B's token".into());
        return Ok(());
    };
    let endpoint = format!("{base}/v/{slug}/graphql");
    let mut diner = Client { http: client.http.clone(), endpoint: endpoint.clone(), requests: 0 };
    let introspection = match &options.public_schema {
        Some(saved) => saved.clone(),
        None => diner.ask(None, INTROSPECTION).await?,
    };
    let result = match Schema::from_introspection(&introspection) {
        Ok(schema) => {
            let attacker = Attacker { token: None, label: " (diner)" };
            attack_schema(&mut diner, &schema, a_ids, options, &attacker, report).await?;
            report.diner_endpoint = Some(endpoint);
            Ok(())
        }
        Err(e) => {
            report.notes.push(format!("the diner endpoint was not attacked: {e} (pass --public-schema)"));
            Ok(())
        }
    };
    client.requests += diner.requests;
    result
}

/// What A's token sees through every query field without required arguments.
async fn snapshot(client: &mut Client, schema: &Schema, token: &str) -> Result<Value, String> {
    let mut seen = serde_json::Map::new();
    for field in schema.fields(&schema.query) {
        let name = field["name"].as_str().unwrap_or("");
        if name.starts_with("__")
            || field["args"].as_array().is_some_and(|a| a.iter().any(|a| type_ref(&a["type"]).required))
        {
            continue;
        }
        let selection = schema.selection(type_ref(&field["type"]).name, MAX_DEPTH);
        let answer = client.ask(Some(token), &format!("query {{ {name} {selection} }}")).await?;
        seen.insert(name.to_string(), answer.get("data").cloned().unwrap_or(Value::Null));
    }
    Ok(Value::Object(seen))
}

/// The arguments of `field` for one attack with `id`: every required argument and every
/// one that takes an ID; None when one cannot be filled.
fn arguments(schema: &Schema, field: &Value, id: &str) -> Option<String> {
    let mut rendered = Vec::new();
    for arg in field["args"].as_array().into_iter().flatten() {
        let needed = type_ref(&arg["type"]).required || schema.takes_id(&arg["type"]);
        if needed {
            let name = arg["name"].as_str().unwrap_or("");
            rendered.push(format!("{name}: {}", schema.literal(name, &arg["type"], id, 2)?));
        }
    }
    Some(if rendered.is_empty() { String::new() } else { format!("({})", rendered.join(", ")) })
}

/// Asks one root field with each of A's ids as `attacker`.
#[allow(clippy::too_many_arguments)]
async fn attack(
    client: &mut Client,
    schema: &Schema,
    operation: &str,
    field: &Value,
    a_ids: &[String],
    options: &Options,
    attacker: &Attacker<'_>,
    report: &mut Report,
) -> Result<(), String> {
    let name = field["name"].as_str().unwrap_or("");
    let args = field["args"].as_array().cloned().unwrap_or_default();
    if !args.iter().any(|a| schema.takes_id(&a["type"])) {
        return Ok(());
    }
    let label = format!("{operation} {name}{}", attacker.label);
    let selection = schema.selection(type_ref(&field["type"]).name, MAX_DEPTH);
    let mut attacked = false;
    for id in a_ids.iter().take(options.ids_per_field) {
        let Some(rendered) = arguments(schema, field, id) else {
            report.fields_skipped.push(label.clone());
            return Ok(());
        };
        let query = format!("{operation} {{ {name}{rendered} {selection} }}");
        let answer = client.ask(attacker.token, &query).await?;
        attacked = true;
        let code = answer["errors"][0]["extensions"]["code"].as_str().unwrap_or(if answer["errors"].is_null() {
            "OK"
        } else {
            "ERROR"
        });
        *report.answers.entry(label.clone()).or_default().entry(code.to_string()).or_default() += 1;
        let data = answer.get("data").cloned().unwrap_or(Value::Null);
        let mut shown = BTreeSet::new();
        collect_ids(&data, &mut shown);
        let text = data.to_string();
        if shown.contains(id) || (data.get(name).is_some_and(|v| !v.is_null()) && text.contains(id.as_str())) {
            report.leaks.push(Leak {
                operation: format!("{operation}{}", attacker.label),
                field: name.into(),
                id: id.clone(),
                detail: format!("venue B's token got venue A's object back: {}", truncate(&text, 300)),
            });
        }
    }
    if attacked {
        report.fields_attacked.push(label);
    }
    Ok(())
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws socket at `{base}/graphql/ws` with `token` and subscribes
/// to each document (ids "0", "1", …).
async fn subscribe_all(base: &str, token: &str, documents: &[String]) -> Result<Socket, String> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let url = format!("{}/graphql/ws", base.replacen("http", "ws", 1));
    let mut request = url.as_str().into_client_request().map_err(|e| format!("{url}: {e}"))?;
    request.headers_mut().insert("sec-websocket-protocol", "graphql-transport-ws".parse().expect("a header value"));
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("{url}: {e}"))?;
    let init = json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } });
    socket.send(Message::Text(init.to_string().into())).await.map_err(|e| e.to_string())?;
    for (id, document) in documents.iter().enumerate() {
        let message = json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": document } });
        socket.send(Message::Text(message.to_string().into())).await.map_err(|e| e.to_string())?;
    }
    Ok(socket)
}

/// The `next` payloads with data a socket receives until `until`.
async fn events_until(socket: &mut Socket, until: tokio::time::Instant) -> Vec<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut events = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(until, socket.next()).await {
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            // A refusal (e.g. FORBIDDEN for a token without the bit) is no event.
            if value["type"] == "next" && value["payload"]["data"].is_object() {
                events.push(value["payload"].clone());
            }
        }
    }
    events
}

/// Watches every subscription of the staff schema for `options.watch`: B's sockets (its
/// token, and the person's) subscribe with A's ids where a field takes one, A's socket
/// subscribes as itself. Any event on B's sockets that shows one of A's ids is a leak; A's
/// events count what happened meanwhile (none proves nothing, and the report says so).
async fn watch_subscriptions(schema: &Schema, base: &str, a_ids: &[String], options: &Options, report: &mut Report) {
    let Some(root) = schema.subscription.clone().filter(|_| !options.watch.is_zero()) else {
        report.notes.push("subscriptions were not watched (no subscription type, or --watch-secs 0)".into());
        return;
    };
    let id = a_ids.first().map(String::as_str).unwrap_or("00000000-0000-0000-0000-000000000000");
    let (mut for_b, mut for_a) = (Vec::new(), Vec::new());
    for field in schema.fields(&root) {
        let name = field["name"].as_str().unwrap_or("");
        let selection = schema.selection(type_ref(&field["type"]).name, MAX_DEPTH);
        let Some(arguments) = arguments(schema, field, id) else { continue };
        for_b.push(format!("subscription {{ {name}{arguments} {selection} }}"));
        if !field["args"].as_array().is_some_and(|a| a.iter().any(|a| type_ref(&a["type"]).required)) {
            for_a.push(format!("subscription {{ {name} {selection} }}"));
        }
        report.subscriptions.fields.push(name.to_string());
    }
    let mut tokens_b = vec![options.token_b.as_str()];
    tokens_b.extend(options.person_token_b.as_deref());
    let mut sockets_b = Vec::new();
    for token in tokens_b {
        match subscribe_all(base, token, &for_b).await {
            Ok(socket) => sockets_b.push(socket),
            Err(e) => report.notes.push(format!("a subscription socket of B could not be opened: {e}")),
        }
    }
    let mut socket_a = match subscribe_all(base, &options.token_a, &for_a).await {
        Ok(socket) => Some(socket),
        Err(e) => {
            report.notes.push(format!("A's subscription socket could not be opened: {e}"));
            None
        }
    };
    eprintln!("verify-isolation: watching subscriptions for {} s", options.watch.as_secs());
    let until = tokio::time::Instant::now() + options.watch;
    let watch_b = futures_util::future::join_all(sockets_b.iter_mut().map(|socket| events_until(socket, until)));
    let watch_a = async {
        match socket_a.as_mut() {
            Some(socket) => events_until(socket, until).await,
            None => Vec::new(),
        }
    };
    let (events_b, events_a) = tokio::join!(watch_b, watch_a);
    report.subscriptions.watched_secs = options.watch.as_secs();
    report.subscriptions.events_a = events_a.len();
    let events_b: Vec<Value> = events_b.into_iter().flatten().collect();
    report.subscriptions.events_b = events_b.len();
    let a_ids: BTreeSet<&str> = a_ids.iter().map(String::as_str).collect();
    let a_event_ids: BTreeSet<String> = events_a
        .iter()
        .flat_map(|e| {
            let mut ids = BTreeSet::new();
            collect_ids(e, &mut ids);
            ids
        })
        .collect();
    for event in &events_b {
        let mut shown = BTreeSet::new();
        collect_ids(event, &mut shown);
        if let Some(leaked) = shown.iter().find(|id| a_ids.contains(id.as_str()) || a_event_ids.contains(*id)) {
            report.leaks.push(Leak {
                operation: "subscription".into(),
                field: report.subscriptions.fields.join(","),
                id: leaked.clone(),
                detail: format!("venue B's socket received venue A's event: {}", truncate(&event.to_string(), 300)),
            });
        }
    }
    if events_a.is_empty() {
        report.notes.push(format!(
            "no event of venue A happened in the {} s watch: make one (e.g. a paid order) during the window to prove the subscriptions",
            options.watch.as_secs()
        ));
    }
}

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
