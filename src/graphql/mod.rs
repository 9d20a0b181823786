//! The GraphQL kernel, below every feature: the one request context ([`context`]), the
//! permission guards ([`permission_guard`]), the one conversion of feature errors ([`error`]) and the
//! guardrails every schema runs behind ([`request_guardrails`]), with the document budget they
//! apply first ([`budget`]). Schema assembly, which needs the
//! features, is `crate::schema`.

pub mod budget;
pub mod context;
pub mod error;
pub mod permission_guard;
pub mod request_guardrails;

use async_graphql::{ID, SimpleObject};
use uuid::Uuid;

use crate::error::AppError;

/// Reads an `ID` argument as a UUID; a malformed one is `BAD_USER_INPUT` naming `argument`.
pub fn parse_id(id: &ID, argument: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(id.as_str()).map_err(|_| AppError::bad_input(format!("{argument} is not a valid id")))
}

/// Where a page of a cursor-paged list ends (order history, the audit log).
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Whether another page follows.
    pub has_next_page: bool,
    /// The cursor of the last item of this page (pass it as `after`).
    pub end_cursor: Option<String>,
}
