//! The guardrails every GraphQL request passes through, around the schema (not as an
//! async-graphql extension, which would wrap every field's resolver): the document
//! budget ([`super::budget`]: size, tokens, nesting, expanded selections and spreads,
//! all checked before anything expands a fragment), alias limit,
//! introspection switch, subscription-only WebSocket, stable error codes for parse,
//! validation and limit errors, masking of any uncoded execution error (so internal text
//! never reaches a client), and per-operation metrics.

use std::sync::Arc;
use std::time::Instant;

use std::collections::HashMap;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Data, Executor, Pos, Request, Response, ServerError, Value};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use super::budget;
use crate::config::GraphqlLimits;
use crate::observability::Metrics;

/// What the guardrails enforce.
pub struct Rules {
    /// The document limits (budget and aliases).
    pub limits: GraphqlLimits,
    /// Where operation counts and latencies go.
    pub metrics: Option<Arc<Metrics>>,
    /// Whether introspection is answered; when not, asking gets a clear error.
    pub introspection: bool,
}

/// A schema (any [`Executor`]) behind the guardrails.
#[derive(Clone)]
pub struct Guarded<E> {
    inner: E,
    rules: Arc<Rules>,
}

fn with_code(mut error: ServerError, code: &str) -> ServerError {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    if extensions.get("code").is_none() {
        extensions.set("code", Value::String(code.to_string()));
    }
    error
}

fn has_code(error: &ServerError) -> bool {
    error.extensions.as_ref().is_some_and(|e| e.get("code").is_some())
}

fn kind_name(ty: OperationType) -> &'static str {
    match ty {
        OperationType::Query => "query",
        OperationType::Mutation => "mutation",
        OperationType::Subscription => "subscription",
    }
}

/// Whether any operation asks for `__schema` or `__type` at its root.
fn asks_introspection(doc: &ExecutableDocument) -> bool {
    doc.operations.iter().any(|(_, op)| {
        op.node.selection_set.node.items.iter().any(|item| match &item.node {
            Selection::Field(f) => matches!(f.node.name.node.as_str(), "__schema" | "__type"),
            _ => false,
        })
    })
}

/// Where each argument of the document stands (its name's and its value's position), so
/// an argument coercion error, which carries only a position, can name its argument.
pub fn argument_positions(doc: &ExecutableDocument) -> HashMap<Pos, String> {
    fn walk(set: &SelectionSet, out: &mut HashMap<Pos, String>) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    for (name, value) in &field.node.arguments {
                        out.insert(name.pos, name.node.to_string());
                        out.insert(value.pos, name.node.to_string());
                    }
                    walk(&field.node.selection_set.node, out);
                }
                Selection::InlineFragment(fragment) => walk(&fragment.node.selection_set.node, out),
                Selection::FragmentSpread(_) => {}
            }
        }
    }
    let mut out = HashMap::new();
    for (_, op) in doc.operations.iter() {
        walk(&op.node.selection_set.node, &mut out);
    }
    for fragment in doc.fragments.values() {
        walk(&fragment.node.selection_set.node, &mut out);
    }
    out
}

/// Whether an error is a value the caller gave that does not fit its argument or variable
/// (out of range, wrong type, unknown enum value, malformed scalar): the caller's mistake.
fn is_input_error(error: &ServerError) -> bool {
    let message = &error.message;
    message.starts_with("Failed to parse")
        || message.starts_with("Invalid value for argument")
        || message.starts_with("Expected input type")
        || (message.starts_with("Variable \"") && (message.contains("of type") || message.contains("is not")))
}

/// Makes an input error say which argument it is about (from its position) when the
/// message does not already.
fn name_the_argument(mut error: ServerError, arguments: &HashMap<Pos, String>) -> ServerError {
    if !error.message.starts_with("Invalid value for argument") {
        let named = error.locations.iter().find_map(|pos| arguments.get(pos));
        if let Some(name) = named {
            error.message = format!("invalid value for argument \"{name}\": {}", error.message);
        }
    }
    error
}

/// Whether an uncoded error was raised before execution (parse, limits, validation: no
/// field path) and so describes the request, not the server.
fn rejected_request(error: &ServerError) -> bool {
    error.path.is_empty()
}

fn is_limit(error: &ServerError) -> bool {
    let message = &error.message;
    message.contains("nested too deep") || message.contains("too complex") || message.contains("cannot be greater than")
}

/// Codes every uncoded error: a value that does not fit its argument as BAD_USER_INPUT
/// (named, never logged above INFO), a rejected request's as a limit or validation error,
/// any other as an internal error whose text is logged and replaced.
fn code_errors(response: &mut Response, arguments: &HashMap<Pos, String>) {
    for error in &mut response.errors {
        if has_code(error) {
            continue;
        }
        if is_input_error(error) {
            tracing::info!(error = %error.message, "GraphQL input refused");
            *error = with_code(name_the_argument(error.clone(), arguments), "BAD_USER_INPUT");
            error.path.clear();
        } else if rejected_request(error) {
            let code = if is_limit(error) { "QUERY_LIMIT_EXCEEDED" } else { "GRAPHQL_VALIDATION_FAILED" };
            *error = with_code(error.clone(), code);
        } else {
            tracing::error!(error = %error.message, path = ?error.path, "uncoded GraphQL execution error masked");
            error.message = "internal error".into();
            error.extensions = None;
            *error = with_code(error.clone(), "INTERNAL");
        }
    }
}

/// The kind of the operation `request` runs (the named one, or the only one).
fn operation_kind(doc: &ExecutableDocument, operation_name: Option<&str>) -> Option<OperationType> {
    match (&doc.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op.node.ty),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name).map(|op| op.node.ty),
        (DocumentOperations::Multiple(ops), None) => {
            (ops.len() == 1).then(|| ops.values().next())?.map(|op| op.node.ty)
        }
    }
}

impl<E: Executor> Guarded<E> {
    /// Puts `inner` behind `rules`.
    pub fn new(inner: E, rules: Rules) -> Guarded<E> {
        Guarded { inner, rules: Arc::new(rules) }
    }

    /// The schema itself (for its SDL).
    pub fn inner(&self) -> &E {
        &self.inner
    }

    /// Parses `request` (kept parsed for execution) and applies the document rules;
    /// returns the kind of operation it runs and where its arguments stand.
    fn check(&self, request: &mut Request, over_websocket: bool) -> Result<Checked, ServerError> {
        let operation_name = request.operation_name.clone();
        let limits = &self.rules.limits;
        let aliases = budget::admit(request, limits, None)?.aliases;
        if aliases > limits.max_aliases as u64 {
            let message = format!("query uses {aliases} aliases; the limit is {}", limits.max_aliases);
            return Err(with_code(ServerError::new(message, None), "QUERY_LIMIT_EXCEEDED"));
        }
        let doc = request.parsed_query().map_err(|e| with_code(e.clone(), "GRAPHQL_PARSE_FAILED"))?;
        if !self.rules.introspection && asks_introspection(doc) {
            let error = ServerError::new(
                "introspection is disabled on this server; the schema is published as schema.graphql",
                None,
            );
            return Err(with_code(error, "INTROSPECTION_DISABLED"));
        }
        // A WebSocket connection authenticated once, at connection_init: it may only
        // subscribe (each update re-checks the token); queries and mutations go to POST.
        if over_websocket && doc.operations.iter().any(|(_, op)| op.node.ty != OperationType::Subscription) {
            let error = ServerError::new(
                "only subscriptions are served over /graphql/ws; send queries and mutations to POST /graphql",
                None,
            );
            return Err(with_code(error, "BAD_REQUEST"));
        }
        Ok(Checked { kind: operation_kind(doc, operation_name.as_deref()), arguments: argument_positions(doc) })
    }
}

/// What [`Guarded::check`] learned of a request.
struct Checked {
    kind: Option<OperationType>,
    arguments: HashMap<Pos, String>,
}

impl<E: Executor> Executor for Guarded<E> {
    async fn execute(&self, mut request: Request) -> Response {
        let started = Instant::now();
        let (kind, arguments, mut response) = match self.check(&mut request, false) {
            Ok(checked) => (checked.kind, checked.arguments, self.inner.execute(request).await),
            Err(error) => (None, HashMap::new(), Response::from_errors(vec![error])),
        };
        code_errors(&mut response, &arguments);
        if let Some(metrics) = &self.rules.metrics {
            let kind = kind.map_or("unknown", kind_name);
            metrics.observe_graphql(kind, response.errors.is_empty(), started.elapsed());
        }
        response
    }

    fn execute_stream(&self, mut request: Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        match self.check(&mut request, true) {
            Ok(checked) => self
                .inner
                .execute_stream(request, session_data)
                .map(move |mut response| {
                    code_errors(&mut response, &checked.arguments);
                    response
                })
                .boxed(),
            Err(error) => futures_util::stream::once(async move { Response::from_errors(vec![error]) }).boxed(),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_graphql::PathSegment;

    use super::*;

    fn code(error: &ServerError) -> String {
        error.extensions.as_ref().and_then(|e| e.get("code")).map(|c| c.to_string()).unwrap_or_default()
    }

    #[test]
    fn values_that_do_not_fit_an_argument_are_the_callers_mistake_and_name_it() {
        let doc = async_graphql::parser::parse_query("{ orders(first: 97017740289913) { edges { cursor } } }").unwrap();
        let arguments = argument_positions(&doc);
        let value_pos = Pos { line: 1, column: 17 };
        assert_eq!(arguments.get(&value_pos).map(String::as_str), Some("first"), "{arguments:?}");
        let mut parse = ServerError::new(
            "Failed to parse \"Int\": Only integers from -2147483648 to 2147483647 are accepted.",
            Some(value_pos),
        );
        parse.path = vec![PathSegment::Field("orders".into())];
        let invalid = ServerError::new(
            "Invalid value for argument \"status\", enumeration type \"OrderStatus\" does not contain the value \"X\"",
            None,
        );
        let mut response = Response::from_errors(vec![parse, invalid]);
        code_errors(&mut response, &arguments);
        assert_eq!(code(&response.errors[0]), "\"BAD_USER_INPUT\"");
        assert!(response.errors[0].message.starts_with("invalid value for argument \"first\": Failed to parse"));
        assert!(response.errors[0].path.is_empty());
        assert_eq!(code(&response.errors[1]), "\"BAD_USER_INPUT\"");
        assert!(response.errors[1].message.contains("\"status\""));
    }

    #[test]
    fn uncoded_errors_get_codes_and_execution_errors_lose_their_text() {
        let mut field_error = ServerError::new("relation \"menu_items\" does not exist", None);
        field_error.path = vec![PathSegment::Field("menu".into())];
        let coded = with_code(ServerError::new("no such order", None), "NOT_FOUND");
        let mut response = Response::from_errors(vec![
            field_error,
            ServerError::new("Unknown field \"nope\" on type \"Query\".", None),
            ServerError::new("Query is nested too deep.", None),
            ServerError::new("The recursion depth of the query cannot be greater than `32`", None),
            coded,
        ]);
        code_errors(&mut response, &HashMap::new());
        let codes: Vec<String> = response.errors.iter().map(code).collect();
        assert_eq!(
            codes,
            [
                "\"INTERNAL\"",
                "\"GRAPHQL_VALIDATION_FAILED\"",
                "\"QUERY_LIMIT_EXCEEDED\"",
                "\"QUERY_LIMIT_EXCEEDED\"",
                "\"NOT_FOUND\""
            ]
        );
        assert_eq!(response.errors[0].message, "internal error");
        assert_eq!(response.errors[4].message, "no such order");
    }
}
