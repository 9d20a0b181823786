//! Bounded work before anything expands a document. A GraphQL document is small on the
//! wire but may stand for an enormous one: `fragment F0 on Query { ...F1 ...F1 }`, and so
//! on 30 times, is 2^30 spreads in 1.4 KB, and async-graphql expands every spread while
//! it checks depth, directives and complexity. So before the parser runs, a linear scan
//! bounds the text (bytes, tokens, bracket nesting); after it, one memoised pass over the
//! parsed document counts what the expanded document would hold (selections, fragment
//! spreads, aliases, and any one field, e.g. `startCheckout`) without expanding it: each
//! fragment is counted once and its counts multiplied at every spread. Every refusal is
//! `BAD_USER_INPUT` and costs microseconds.

use std::collections::HashMap;

use async_graphql::parser::types::{ExecutableDocument, Selection, SelectionSet};
use async_graphql::{Request, ServerError, Value};

use crate::config::GraphqlLimits;

/// What the expanded document would hold, counted with multiplicity (saturating).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Fields, inline fragments and fragment spreads.
    pub selections: u64,
    /// Fragment spreads.
    pub spreads: u64,
    /// Aliased fields.
    pub aliases: u64,
    /// Fields with the name asked for (see [`count_field`]).
    pub named: u64,
}

impl Counts {
    fn add(self, other: Counts) -> Counts {
        Counts {
            selections: self.selections.saturating_add(other.selections),
            spreads: self.spreads.saturating_add(other.spreads),
            aliases: self.aliases.saturating_add(other.aliases),
            named: self.named.saturating_add(other.named),
        }
    }
}

/// A refusal of a document (always the caller's mistake).
fn refused(message: String) -> ServerError {
    let mut error = ServerError::new(message, None);
    error.extensions.get_or_insert_with(Default::default).set("code", Value::String("BAD_USER_INPUT".into()));
    error
}

/// Bounds the text of a document before it is parsed: its size, its tokens (names,
/// numbers, strings and punctuators, as GraphQL's lexer reads them) and how deep its
/// brackets nest. Linear in the text, no allocation.
pub fn scan(query: &str, limits: &GraphqlLimits) -> Result<(), ServerError> {
    if query.len() > limits.max_query_bytes {
        let message = format!("the query is {} bytes long; the limit is {} bytes", query.len(), limits.max_query_bytes);
        return Err(refused(message));
    }
    let bytes = query.as_bytes();
    let (mut at, mut tokens, mut depth) = (0usize, 0usize, 0usize);
    while at < bytes.len() {
        let byte = bytes[at];
        match byte {
            b' ' | b'\t' | b'\n' | b'\r' | b',' => at += 1,
            0xEF if bytes[at..].starts_with(b"\xEF\xBB\xBF") => at += 3,
            b'#' => {
                while at < bytes.len() && bytes[at] != b'\n' && bytes[at] != b'\r' {
                    at += 1;
                }
            }
            b'"' => {
                at = skip_string(bytes, at);
                tokens += 1;
            }
            b'{' | b'[' | b'(' => {
                depth += 1;
                if depth > limits.max_nesting {
                    let message = format!("the query nests brackets deeper than {} levels", limits.max_nesting);
                    return Err(refused(message));
                }
                tokens += 1;
                at += 1;
            }
            b'}' | b']' | b')' => {
                depth = depth.saturating_sub(1);
                tokens += 1;
                at += 1;
            }
            b'.' if bytes[at..].starts_with(b"...") => {
                tokens += 1;
                at += 3;
            }
            b if b.is_ascii_digit() || b == b'-' => {
                at += 1;
                while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || matches!(bytes[at], b'.' | b'+' | b'-'))
                {
                    at += 1;
                }
                tokens += 1;
            }
            b if b.is_ascii_alphabetic() || b == b'_' => {
                while at < bytes.len() && (bytes[at].is_ascii_alphanumeric() || bytes[at] == b'_') {
                    at += 1;
                }
                tokens += 1;
            }
            _ => {
                tokens += 1;
                at += 1;
            }
        }
        if tokens > limits.max_tokens {
            return Err(refused(format!("the query has more than {} tokens", limits.max_tokens)));
        }
    }
    Ok(())
}

/// Where the string starting at `start` (a `"`) ends: past its closing quote, or the end
/// of the text for an unterminated one (the parser then says what is wrong).
fn skip_string(bytes: &[u8], start: usize) -> usize {
    if bytes[start..].starts_with(b"\"\"\"") {
        let mut at = start + 3;
        while at < bytes.len() {
            if bytes[at..].starts_with(b"\\\"\"\"") {
                at += 4;
            } else if bytes[at..].starts_with(b"\"\"\"") {
                return at + 3;
            } else {
                at += 1;
            }
        }
        return at;
    }
    let mut at = start + 1;
    while at < bytes.len() {
        match bytes[at] {
            b'\\' => at += 2,
            b'"' => return at + 1,
            b'\n' | b'\r' => return at,
            _ => at += 1,
        }
    }
    at.min(bytes.len())
}

/// Counts every operation of `doc` as if every fragment spread were expanded, without
/// expanding one: each fragment is counted once (memoised) and its counts added at each
/// spread. `named` counts the fields called `field` (any alias, any depth, any fragment).
/// A fragment that spreads itself, directly or not, is refused (it would never end).
pub fn count(doc: &ExecutableDocument, field: Option<&str>) -> Result<Counts, ServerError> {
    let mut counter = Counter { doc, field, done: HashMap::new(), open: Vec::new() };
    let mut total = Counts::default();
    for (_, operation) in doc.operations.iter() {
        total = total.add(counter.selection_set(&operation.node.selection_set.node)?);
    }
    Ok(total)
}

struct Counter<'a> {
    doc: &'a ExecutableDocument,
    field: Option<&'a str>,
    done: HashMap<&'a str, Counts>,
    open: Vec<&'a str>,
}

impl<'a> Counter<'a> {
    fn selection_set(&mut self, set: &'a SelectionSet) -> Result<Counts, ServerError> {
        let mut total = Counts::default();
        for item in &set.items {
            let one = match &item.node {
                Selection::Field(f) => {
                    let own = Counts {
                        selections: 1,
                        spreads: 0,
                        aliases: u64::from(f.node.alias.is_some()),
                        named: u64::from(self.field == Some(f.node.name.node.as_str())),
                    };
                    own.add(self.selection_set(&f.node.selection_set.node)?)
                }
                Selection::InlineFragment(i) => {
                    Counts { selections: 1, ..Counts::default() }.add(self.selection_set(&i.node.selection_set.node)?)
                }
                Selection::FragmentSpread(s) => {
                    let spread = Counts { selections: 1, spreads: 1, ..Counts::default() };
                    spread.add(self.fragment(s.node.fragment_name.node.as_str())?)
                }
            };
            total = total.add(one);
        }
        Ok(total)
    }

    /// One expansion of the fragment `name` (nothing for an unknown one: validation
    /// refuses it before anything runs).
    fn fragment(&mut self, name: &'a str) -> Result<Counts, ServerError> {
        if let Some(counts) = self.done.get(name) {
            return Ok(*counts);
        }
        let Some((key, fragment)) = self.doc.fragments.get_key_value(name) else { return Ok(Counts::default()) };
        if self.open.contains(&name) {
            return Err(refused(format!("fragment \"{name}\" spreads itself (directly or through other fragments)")));
        }
        self.open.push(key.as_str());
        let counts = self.selection_set(&fragment.node.selection_set.node);
        self.open.pop();
        let counts = counts?;
        self.done.insert(key.as_str(), counts);
        Ok(counts)
    }
}

/// Checks expanded counts against the limits.
fn check_counts(counts: Counts, limits: &GraphqlLimits) -> Result<(), ServerError> {
    if counts.spreads > limits.max_fragment_spreads as u64 {
        let message = format!(
            "the query expands to {} fragment spreads; the limit is {}",
            counts.spreads, limits.max_fragment_spreads
        );
        return Err(refused(message));
    }
    if counts.selections > limits.max_selections as u64 {
        let message = format!(
            "the query expands to {} selections (fields and fragments); the limit is {}",
            counts.selections, limits.max_selections
        );
        return Err(refused(message));
    }
    Ok(())
}

/// Admits a request's document: scans its text, parses it once (kept in the request for
/// execution) and checks what its expansion would hold. Returns the counts, `named`
/// counting the fields called `field`.
pub fn admit(request: &mut Request, limits: &GraphqlLimits, field: Option<&str>) -> Result<Counts, ServerError> {
    scan(&request.query, limits)?;
    let doc = request.parsed_query().map_err(|e| {
        let mut error = e.clone();
        error.extensions.get_or_insert_with(Default::default).set("code", Value::String("GRAPHQL_PARSE_FAILED".into()));
        error
    })?;
    let counts = count(doc, field)?;
    check_counts(counts, limits)?;
    Ok(counts)
}

/// How many times a batch would run the field `field` (every alias, fragment, nesting
/// level and batch entry counted), or why a document cannot be counted; documents that
/// do not name the field at all are not parsed.
pub fn count_field_in_batch(
    batch: &mut async_graphql::BatchRequest,
    limits: &GraphqlLimits,
    field: &str,
) -> Result<u64, ServerError> {
    let mut total = 0u64;
    for request in batch.iter_mut() {
        // A field is named by its literal name token: no escape can spell it otherwise.
        if request.query.contains(field) {
            total = total.saturating_add(admit(request, limits, Some(field))?.named);
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> GraphqlLimits {
        GraphqlLimits::default()
    }

    /// The attack of issue 19: F0 spreads F1 twice, … F{n-1} spreads Fn twice.
    fn fragment_bomb(levels: usize, on: &str, leaf: &str) -> String {
        let mut query = String::from("query{...F0}");
        for i in 0..levels {
            query.push_str(&format!(" fragment F{i} on {on}{{...F{} ...F{}}}", i + 1, i + 1));
        }
        query.push_str(&format!(" fragment F{levels} on {on}{{{leaf}}}"));
        query
    }

    #[test]
    fn a_fragment_bomb_is_counted_without_expanding_it_and_refused() {
        let query = fragment_bomb(30, "Query", "me{venue{slug}}");
        assert!(query.len() < 1500, "{}", query.len());
        let doc = async_graphql::parser::parse_query(&query).unwrap();
        let started = std::time::Instant::now();
        let counts = count(&doc, Some("slug")).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_millis(50), "counting must not expand");
        assert_eq!(counts.spreads, (1u64 << 31) - 1);
        assert_eq!(counts.named, 1u64 << 30);
        let mut request = Request::new(query);
        let error = admit(&mut request, &limits(), None).unwrap_err();
        assert!(error.message.contains("fragment spreads"), "{}", error.message);
        assert_eq!(error.extensions.unwrap().get("code"), Some(&Value::String("BAD_USER_INPUT".into())));
    }

    #[test]
    fn fields_are_counted_at_any_depth_through_aliases_fragments_and_nesting() {
        let nested = format!(
            "mutation {{ {} a: startCheckout(input: {{}}) {{ checkoutId }} b: startCheckout(input: {{}}) {{ checkoutId }} {} }}",
            "... { ".repeat(17),
            "} ".repeat(17)
        );
        let doc = async_graphql::parser::parse_query(&nested).unwrap();
        assert_eq!(count(&doc, Some("startCheckout")).unwrap().named, 2);
        let spread =
            "mutation { ...F ...F } fragment F on Mutation { ... { startCheckout(input: {}) { checkoutId } } }";
        let doc = async_graphql::parser::parse_query(spread).unwrap();
        assert_eq!(count(&doc, Some("startCheckout")).unwrap().named, 2);
        let mut batch: async_graphql::BatchRequest = serde_json::from_str(&format!(
            r#"[{{"query":{}}},{{"query":"mutation {{ startCheckout(input: {{}}) {{ checkoutId }} }}"}},{{"query":"{{ menu {{ id }} }}"}}]"#,
            serde_json::to_string(&nested).unwrap()
        ))
        .unwrap();
        assert_eq!(count_field_in_batch(&mut batch, &limits(), "startCheckout").unwrap(), 3);
    }

    #[test]
    fn a_document_that_cannot_be_counted_is_refused_not_passed_at_zero() {
        let mut batch: async_graphql::BatchRequest =
            serde_json::from_str(r#"{"query":"mutation { startCheckout(input: {}) { checkoutId "}"#).unwrap();
        assert!(count_field_in_batch(&mut batch, &limits(), "startCheckout").is_err());
        let cycle = "mutation { ...A } fragment A on Mutation { ...B } fragment B on Mutation { startCheckout(input: {}) { checkoutId } ...A }";
        let doc = async_graphql::parser::parse_query(cycle).unwrap();
        assert!(count(&doc, Some("startCheckout")).unwrap_err().message.contains("spreads itself"));
    }

    #[test]
    fn the_text_is_bounded_before_it_is_parsed() {
        let limits = limits();
        let deep = format!("{{ a(x: {}1{}) }}", "[".repeat(200), "]".repeat(200));
        assert!(scan(&deep, &limits).unwrap_err().message.contains("nests brackets"));
        let many = format!("{{ {} }}", "a ".repeat(limits.max_tokens + 1));
        assert!(scan(&many, &limits).unwrap_err().message.contains("tokens"));
        let long = format!("{{ a }} #{}", "x".repeat(limits.max_query_bytes));
        assert!(scan(&long, &limits).unwrap_err().message.contains("bytes long"));
        let strings = r#"{ a(x: "{{{{[[[[ \" ((((", y: """ {{{{ \""" """) }"#;
        assert!(scan(strings, &limits).is_ok(), "brackets inside strings do not nest");
        assert!(scan("{ menu { categories { name items { id } } } }", &limits).is_ok());
    }

    #[test]
    fn aliases_are_counted_with_multiplicity() {
        let query = "{ ...F ...F ...F } fragment F on Query { a: me { id } b: me { id } }";
        let doc = async_graphql::parser::parse_query(query).unwrap();
        let counts = count(&doc, None).unwrap();
        assert_eq!(counts.aliases, 6);
        assert_eq!(counts.spreads, 3);
        assert_eq!(counts.selections, 3 + 3 * 4);
    }
}
