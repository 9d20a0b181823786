//! A schema-walking fuzzer: every argument of every root field of both schemas, read from
//! the live schema by introspection, gets hostile values (extremes, wrong types, huge
//! strings, unicode, nulls, malformed ids), both inline and through variables, while the
//! other arguments hold plausible values. A client's mistake must never be INTERNAL, nor
//! a 5xx.

use std::collections::BTreeMap;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::helpers::TestApp;

const INTROSPECTION: &str = r#"
query {
  __schema {
    queryType { name } mutationType { name }
    types {
      name kind
      fields { name args { name type { ...T } } type { ...T } }
      inputFields { name type { ...T } }
      enumValues { name }
    }
  }
}
fragment T on __Type { kind name ofType { kind name ofType { kind name ofType { kind name } } } }
"#;

/// The schema as the fuzzer needs it: types by name.
struct Schema {
    types: BTreeMap<String, Value>,
    roots: Vec<(&'static str, String)>,
}

impl Schema {
    async fn load(app: &TestApp, path: &str, token: Option<&str>) -> Schema {
        let auth = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", a.as_str())).collect();
        let (_, body) = app.post(path, &headers, json!({ "query": INTROSPECTION }).to_string()).await;
        let schema = &body["data"]["__schema"];
        let types = schema["types"]
            .as_array()
            .unwrap_or_else(|| panic!("{body}"))
            .iter()
            .map(|t| (t["name"].as_str().unwrap().to_string(), t.clone()))
            .collect();
        let mut roots = vec![("query", schema["queryType"]["name"].as_str().unwrap().to_string())];
        if let Some(mutation) = schema["mutationType"]["name"].as_str() {
            roots.push(("mutation", mutation.to_string()));
        }
        Schema { types, roots }
    }

    /// A plausible literal for a type reference (required input fields filled in).
    fn sample(&self, ty: &Value, depth: usize) -> String {
        match ty["kind"].as_str().unwrap() {
            "NON_NULL" => self.sample(&ty["ofType"], depth),
            "LIST" => format!("[{}]", self.sample(&ty["ofType"], depth)),
            "ENUM" => self.types[ty["name"].as_str().unwrap()]["enumValues"][0]["name"].as_str().unwrap().to_string(),
            "INPUT_OBJECT" if depth < 4 => {
                let fields = self.types[ty["name"].as_str().unwrap()]["inputFields"].as_array().unwrap().clone();
                let required: Vec<String> = fields
                    .iter()
                    .filter(|f| f["type"]["kind"] == "NON_NULL")
                    .map(|f| format!("{}: {}", f["name"].as_str().unwrap(), self.sample(&f["type"], depth + 1)))
                    .collect();
                format!("{{{}}}", required.join(", "))
            }
            "INPUT_OBJECT" => "{}".into(),
            _ => match ty["name"].as_str().unwrap() {
                "Int" => "1".into(),
                "Float" => "1.5".into(),
                "Boolean" => "true".into(),
                "ID" => format!("\"{}\"", uuid::Uuid::new_v4()),
                "DateTime" => "\"2026-01-01T00:00:00Z\"".into(),
                _ => "\"x\"".into(),
            },
        }
    }

    /// The GraphQL type expression of a type reference (for variable declarations).
    fn type_expression(ty: &Value) -> String {
        match ty["kind"].as_str().unwrap() {
            "NON_NULL" => format!("{}!", Schema::type_expression(&ty["ofType"])),
            "LIST" => format!("[{}]", Schema::type_expression(&ty["ofType"])),
            _ => ty["name"].as_str().unwrap().to_string(),
        }
    }

    /// `{ __typename }` for an object (or list of objects) result, nothing for a scalar.
    fn selection(&self, ty: &Value) -> &'static str {
        let mut ty = ty;
        while !ty["ofType"].is_null() {
            ty = &ty["ofType"];
        }
        match ty["kind"].as_str().unwrap() {
            "OBJECT" | "INTERFACE" | "UNION" => " { __typename }",
            _ => "",
        }
    }
}

/// Hostile literals, for any argument (some are the wrong type on purpose).
fn hostile_literals() -> Vec<String> {
    vec![
        "2147483648".into(),
        "-2147483649".into(),
        "97017740289913".into(),
        "-881905397879".into(),
        "99999999999999999999999999".into(),
        "-1".into(),
        "0".into(),
        "1e308".into(),
        "null".into(),
        "true".into(),
        "\"\"".into(),
        "\"not-a-uuid\"".into(),
        "\"00000000-0000-0000-0000-000000000000\"".into(),
        "\"💥\\u0000\\u202e'; DROP TABLE venues; --\"".into(),
        format!("\"{}\"", "x".repeat(20_000)),
        "NOT_A_VALUE".into(),
        "[]".into(),
        "[null]".into(),
        "{}".into(),
        "{ unknown: 1 }".into(),
        "\"9999-99-99T99:99:99Z\"".into(),
    ]
}

/// Hostile values passed as variables (JSON), for the same argument.
fn hostile_variables() -> Vec<Value> {
    vec![
        json!(i64::MAX),
        json!(-881905397879i64),
        json!(1.5),
        json!("12"),
        json!(null),
        json!([1, 2, 3]),
        json!({ "a": 1 }),
        json!("x".repeat(20_000)),
        json!("\u{0}\u{202e}💥"),
        json!(""),
    ]
}

/// Every request the fuzzer sends at one endpoint: (description, body).
fn requests(schema: &Schema) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (kind, root) in &schema.roots {
        for field in schema.types[root]["fields"].as_array().unwrap() {
            let name = field["name"].as_str().unwrap();
            if name.starts_with("__") {
                continue;
            }
            let args = field["args"].as_array().unwrap();
            let selection = schema.selection(&field["type"]);
            for (i, arg) in args.iter().enumerate() {
                let others = |replacement: &str| -> String {
                    args.iter()
                        .enumerate()
                        .map(|(j, a)| {
                            let value = if i == j { replacement.to_string() } else { schema.sample(&a["type"], 0) };
                            format!("{}: {value}", a["name"].as_str().unwrap())
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                for literal in hostile_literals() {
                    let query = format!("{kind} {{ {name}({}){selection} }}", others(&literal));
                    out.push((format!("{name}({}: {literal:.40})", arg["name"]), json!({ "query": query })));
                }
                let declared = Schema::type_expression(&arg["type"]);
                for value in hostile_variables() {
                    let query = format!("{kind}($v: {declared}) {{ {name}({}){selection} }}", others("$v"));
                    out.push((
                        format!("{name}({} = ${value:.40})", arg["name"]),
                        json!({ "query": query, "variables": { "v": value } }),
                    ));
                }
            }
        }
        // Issue 19's documents: a 2^30 fragment bomb and 17 nested inline fragments on
        // every root, answered with a coded refusal, never a stall or INTERNAL.
        let bomb = crate::hostile::fragment_bomb(30, root, "__typename").replacen("query", kind, 1);
        out.push((format!("{kind} fragment bomb"), json!({ "query": bomb })));
        let nested = format!("{kind} {{ {} __typename {} }}", "... { ".repeat(17), "} ".repeat(17));
        out.push((format!("{kind} nested inline fragments"), json!({ "query": nested })));
    }
    out
}

async fn fuzz(app: &TestApp, path: &str, token: Option<&str>) -> usize {
    let schema = Schema::load(app, path, token).await;
    let requests = requests(&schema);
    let sent = requests.len();
    let auth = token.map(|t| format!("Bearer {t}"));
    let failures: Vec<String> = futures_util::stream::iter(requests)
        .map(|(what, body)| {
            let auth = auth.clone();
            async move {
                let mut request = app.client.post(format!("{}{path}", app.base)).json(&body);
                if let Some(auth) = &auth {
                    request = request.header("authorization", auth);
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                let text = response.text().await.unwrap();
                let internal = serde_json::from_str::<Value>(&text)
                    .map(|v| {
                        v["errors"].as_array().is_some_and(|e| e.iter().any(|e| e["extensions"]["code"] == "INTERNAL"))
                    })
                    .unwrap_or(false);
                (status.is_server_error() || internal).then(|| format!("{what}: {status} {text:.300}"))
            }
        })
        .buffer_unordered(8)
        .filter_map(|failure| async move { failure })
        .collect()
        .await;
    let shown: Vec<String> = failures.iter().take(20).map(|f| f.chars().take(300).collect()).collect();
    assert!(failures.is_empty(), "{} of {sent} requests failed:\n{}", failures.len(), shown.join("\n"));
    sent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hostile_argument_of_either_schema_is_answered_internal_or_5xx() {
    // The fuzzer is not the rate limiter's test (limits are off in the suite's servers):
    // it must reach every resolver.
    let app = TestApp::spawn().await;
    app.onboard(&app.a).await;
    let staff = fuzz(&app, "/graphql", Some(&app.a.full)).await;
    let public = fuzz(&app, "/v/alpha/graphql", None).await;
    assert!(staff > 500 && public > 50, "the walk covered {staff} staff and {public} diner requests");
}
