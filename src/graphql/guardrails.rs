//! The guardrails every GraphQL request passes through, around the schema (not as an
//! async-graphql extension, which would wrap every field's resolver): alias limit,
//! introspection switch, subscription-only WebSocket, stable error codes for parse,
//! validation and limit errors, masking of any uncoded execution error (so internal text
//! never reaches a client), and per-operation metrics.

use std::sync::Arc;
use std::time::Instant;

use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Data, Executor, Request, Response, ServerError, Value};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::observability::Metrics;

/// What the guardrails enforce.
pub struct Rules {
    /// Most aliases one document may use.
    pub max_aliases: usize,
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

fn count_aliases(set: &SelectionSet) -> usize {
    set.items
        .iter()
        .map(|item| match &item.node {
            Selection::Field(f) => usize::from(f.node.alias.is_some()) + count_aliases(&f.node.selection_set.node),
            Selection::InlineFragment(f) => count_aliases(&f.node.selection_set.node),
            Selection::FragmentSpread(_) => 0,
        })
        .sum()
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

/// Aliases in every operation and fragment of the document (fragments counted once each,
/// so spreading one fragment many times is bounded by the complexity limit instead).
pub fn document_aliases(doc: &ExecutableDocument) -> usize {
    let operations: usize = doc.operations.iter().map(|(_, op)| count_aliases(&op.node.selection_set.node)).sum();
    let fragments: usize = doc.fragments.values().map(|f| count_aliases(&f.node.selection_set.node)).sum();
    operations + fragments
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

/// Codes every uncoded error: a rejected request's as a limit or validation error, any
/// other as an internal error whose text is logged and replaced.
fn code_errors(response: &mut Response) {
    for error in &mut response.errors {
        if has_code(error) {
            continue;
        }
        if rejected_request(error) {
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
    /// returns the kind of operation it runs.
    fn check(&self, request: &mut Request, over_websocket: bool) -> Result<Option<OperationType>, ServerError> {
        let operation_name = request.operation_name.clone();
        let doc = request.parsed_query().map_err(|e| with_code(e.clone(), "GRAPHQL_PARSE_FAILED"))?;
        let aliases = document_aliases(doc);
        if aliases > self.rules.max_aliases {
            let message = format!("query uses {aliases} aliases; the limit is {}", self.rules.max_aliases);
            return Err(with_code(ServerError::new(message, None), "QUERY_LIMIT_EXCEEDED"));
        }
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
        Ok(operation_kind(doc, operation_name.as_deref()))
    }
}

impl<E: Executor> Executor for Guarded<E> {
    async fn execute(&self, mut request: Request) -> Response {
        let started = Instant::now();
        let (kind, mut response) = match self.check(&mut request, false) {
            Ok(kind) => (kind, self.inner.execute(request).await),
            Err(error) => (None, Response::from_errors(vec![error])),
        };
        code_errors(&mut response);
        if let Some(metrics) = &self.rules.metrics {
            let kind = kind.map_or("unknown", kind_name);
            metrics.observe_graphql(kind, response.errors.is_empty(), started.elapsed());
        }
        response
    }

    fn execute_stream(&self, mut request: Request, session_data: Option<Arc<Data>>) -> BoxStream<'static, Response> {
        match self.check(&mut request, true) {
            Ok(_) => self
                .inner
                .execute_stream(request, session_data)
                .map(|mut response| {
                    code_errors(&mut response);
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
        code_errors(&mut response);
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
