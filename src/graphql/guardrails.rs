//! The GraphQL extension every request passes through: alias limit, stable error codes
//! for parse/validation/limit errors, masking of any uncoded execution error (so internal
//! text never reaches a client), and per-operation metrics.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet};
use async_graphql::{Response, ServerError, ServerResult, ValidationResult, Value, Variables};

use crate::observability::Metrics;

/// Builds one [`Guardrails`] per request.
pub struct GuardrailsFactory {
    /// Most aliases one document may use.
    pub max_aliases: usize,
    /// Where operation counts and latencies go.
    pub metrics: Option<Arc<Metrics>>,
    /// Whether introspection is answered; when not, asking gets a clear error.
    pub introspection: bool,
}

impl ExtensionFactory for GuardrailsFactory {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(Guardrails {
            max_aliases: self.max_aliases,
            metrics: self.metrics.clone(),
            introspection: self.introspection,
            kinds: Mutex::new(Vec::new()),
        })
    }
}

/// Per-request state of the extension.
pub struct Guardrails {
    max_aliases: usize,
    metrics: Option<Arc<Metrics>>,
    introspection: bool,
    /// (operation name, kind) of each operation in the parsed document.
    kinds: Mutex<Vec<(Option<String>, &'static str)>>,
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

#[async_trait::async_trait]
impl Extension for Guardrails {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let doc = next.run(ctx, query, variables).await.map_err(|e| with_code(e, "GRAPHQL_PARSE_FAILED"))?;
        let aliases = document_aliases(&doc);
        if aliases > self.max_aliases {
            let message = format!("query uses {aliases} aliases; the limit is {}", self.max_aliases);
            return Err(with_code(ServerError::new(message, None), "QUERY_LIMIT_EXCEEDED"));
        }
        if !self.introspection && asks_introspection(&doc) {
            let error = ServerError::new(
                "introspection is disabled on this server; the schema is published as schema.graphql",
                None,
            );
            return Err(with_code(error, "INTROSPECTION_DISABLED"));
        }
        // A WebSocket connection authenticated once, at connection_init: it may only
        // subscribe (each update re-checks the token); queries and mutations go to POST.
        let over_websocket = ctx.data_opt::<crate::orders::graphql::ConnectionToken>().is_some();
        if over_websocket && doc.operations.iter().any(|(_, op)| op.node.ty != OperationType::Subscription) {
            let error = ServerError::new(
                "only subscriptions are served over /graphql/ws; send queries and mutations to POST /graphql",
                None,
            );
            return Err(with_code(error, "BAD_REQUEST"));
        }
        let kinds = match &doc.operations {
            DocumentOperations::Single(op) => vec![(None, kind_name(op.node.ty))],
            DocumentOperations::Multiple(ops) => {
                ops.iter().map(|(name, op)| (Some(name.to_string()), kind_name(op.node.ty))).collect()
            }
        };
        *self.kinds.lock().expect("kinds lock") = kinds;
        Ok(doc)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|errors| {
            errors
                .into_iter()
                .map(|e| {
                    let limit = e.message.contains("nested too deep") || e.message.contains("too complex");
                    with_code(e, if limit { "QUERY_LIMIT_EXCEEDED" } else { "GRAPHQL_VALIDATION_FAILED" })
                })
                .collect()
        })
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> Response {
        let started = Instant::now();
        let mut response = next.run(ctx, operation_name).await;
        for error in &mut response.errors {
            if !has_code(error) {
                tracing::error!(error = %error.message, path = ?error.path, "uncoded GraphQL execution error masked");
                error.message = "internal error".into();
                *error = with_code(error.clone(), "INTERNAL");
            }
        }
        if let Some(metrics) = &self.metrics {
            let kinds = self.kinds.lock().expect("kinds lock");
            let kind = kinds
                .iter()
                .find(|(name, _)| operation_name.is_none() || name.as_deref() == operation_name)
                .map_or("unknown", |(_, kind)| *kind);
            metrics.observe_graphql(kind, response.errors.is_empty(), started.elapsed());
        }
        response
    }
}
