//! The one conversion from feature errors to GraphQL errors: a safe message plus
//! `extensions.code`. Internal detail is logged (with the request span) and reported to
//! Sentry here, and nowhere reaches the client.

use async_graphql::{Error, ErrorExtensions};

use crate::error::AppError;

impl From<AppError> for Error {
    fn from(error: AppError) -> Error {
        if let AppError::Internal(source) = &error {
            crate::observability::report_internal(source.as_ref());
        }
        let code = error.code();
        let retry_after = match &error {
            AppError::RateLimited { retry_after_secs, .. } => Some(*retry_after_secs),
            _ => None,
        };
        Error::new(error.client_message()).extend_with(|_, ext| {
            ext.set("code", code);
            if let Some(seconds) = retry_after {
                ext.set("retryAfter", seconds);
            }
        })
    }
}

/// A GraphQL error with `code` and a message, for errors raised outside feature code.
pub fn coded(code: &'static str, message: impl Into<String>) -> Error {
    Error::new(message).extend_with(|_, ext| ext.set("code", code))
}
