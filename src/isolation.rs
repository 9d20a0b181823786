//! `venueql verify-isolation`: the cross-tenant check for operators and auditors, run
//! against a live deployment with two venues' tokens. It reads the staff schema by
//! introspection (or from a saved introspection result), collects venue A's ids with A's
//! token, then asks every query and mutation that takes an ID with B's token and A's ids,
//! and reports any answer that shows one of A's ids and any change to what A's token
//! sees. It needs nothing but HTTP: no database access, no knowledge of the code.

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
        for leak in &self.leaks {
            text.push_str(&format!("  LEAK {} {} with id {}: {}\n", leak.operation, leak.field, leak.id, leak.detail));
        }
        text
    }
}

/// The standard introspection query, as much of it as the walk needs.
const INTROSPECTION: &str = "query { __schema { queryType { name } mutationType { name } types { kind name \
    fields { name args { name type { ...T } } type { ...T } } inputFields { name type { ...T } } enumValues { name } } } } \
    fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }";

/// How deep the walk selects into objects.
const MAX_DEPTH: usize = 3;

struct Schema {
    types: BTreeMap<String, Value>,
    query: String,
    mutation: Option<String>,
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
                    if field_ref.required || field_ref.name == "ID" {
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

    /// Whether `ty` (or an input object it names, one level down) takes an ID.
    fn takes_id(&self, ty: &Value) -> bool {
        let reference = type_ref(ty);
        reference.name == "ID"
            || (reference.kind == "INPUT_OBJECT"
                && self
                    .types
                    .get(reference.name)
                    .and_then(|t| t["inputFields"].as_array())
                    .is_some_and(|fields| fields.iter().any(|f| type_ref(&f["type"]).name == "ID")))
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
    /// Asks `query`; a rate-limited request waits as told (`Retry-After`) and is repeated.
    async fn ask(&mut self, token: &str, query: &str) -> Result<Value, String> {
        let mut waits = 0;
        let response = loop {
            self.requests += 1;
            let response = self
                .http
                .post(&self.endpoint)
                .bearer_auth(token)
                .json(&json!({ "query": query }))
                .send()
                .await
                .map_err(|e| format!("{}: {e}", self.endpoint))?;
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

/// Runs the check.
pub async fn run(options: Options) -> Result<Report, String> {
    let endpoint = format!("{}/graphql", options.url.trim_end_matches('/'));
    let http =
        reqwest::Client::builder().timeout(std::time::Duration::from_secs(30)).build().map_err(|e| e.to_string())?;
    let mut client = Client { http, endpoint: endpoint.clone(), requests: 0 };
    let introspection = match &options.schema {
        Some(saved) => saved.clone(),
        None => client.ask(&options.token_a, INTROSPECTION).await?,
    };
    let schema = Schema::from_introspection(&introspection).map_err(|e| {
        format!("{e}: is introspection off? Pass a saved introspection result with --schema ({introspection})")
    })?;

    let before = snapshot(&mut client, &schema, &options.token_a).await?;
    let mut a_ids = BTreeSet::new();
    collect_ids(&before, &mut a_ids);
    // What B's token sees as its own (a person who works at both venues, shared ids) is
    // not A's: B may legitimately read and change it, so it is not tried.
    let mut b_ids = BTreeSet::new();
    collect_ids(&snapshot(&mut client, &schema, &options.token_b).await?, &mut b_ids);
    let a_ids: Vec<String> = a_ids.difference(&b_ids).cloned().collect();

    let mut report = Report {
        endpoint,
        requests: 0,
        venue_a_ids: a_ids.len(),
        fields_attacked: Vec::new(),
        fields_skipped: Vec::new(),
        answers: BTreeMap::new(),
        leaks: Vec::new(),
    };
    let roots = [("query", Some(schema.query.clone())), ("mutation", schema.mutation.clone())];
    for (operation, root) in roots {
        let Some(root) = root else { continue };
        for field in schema.fields(&root) {
            attack(&mut client, &schema, operation, field, &a_ids, &options, &mut report).await?;
        }
    }
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
    Ok(report)
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
        let answer = client.ask(token, &format!("query {{ {name} {selection} }}")).await?;
        seen.insert(name.to_string(), answer.get("data").cloned().unwrap_or(Value::Null));
    }
    Ok(Value::Object(seen))
}

/// Asks one root field with each of A's ids under B's token.
async fn attack(
    client: &mut Client,
    schema: &Schema,
    operation: &str,
    field: &Value,
    a_ids: &[String],
    options: &Options,
    report: &mut Report,
) -> Result<(), String> {
    let name = field["name"].as_str().unwrap_or("");
    let args = field["args"].as_array().cloned().unwrap_or_default();
    if !args.iter().any(|a| schema.takes_id(&a["type"])) {
        return Ok(());
    }
    let label = format!("{operation} {name}");
    let selection = schema.selection(type_ref(&field["type"]).name, MAX_DEPTH);
    let mut attacked = false;
    for id in a_ids.iter().take(options.ids_per_field) {
        let mut rendered = Vec::new();
        for arg in &args {
            let needed = type_ref(&arg["type"]).required || schema.takes_id(&arg["type"]);
            if !needed {
                continue;
            }
            match schema.literal(arg["name"].as_str().unwrap_or(""), &arg["type"], id, 2) {
                Some(literal) => rendered.push(format!("{}: {literal}", arg["name"].as_str().unwrap_or(""))),
                None => {
                    report.fields_skipped.push(label.clone());
                    return Ok(());
                }
            }
        }
        let query = format!("{operation} {{ {name}({}) {selection} }}", rendered.join(", "));
        let answer = client.ask(&options.token_b, &query).await?;
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
                operation: operation.into(),
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

fn truncate(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}
