//! The feature-layer error: what went wrong in terms a client may see, plus an opaque
//! internal variant whose detail is logged and never sent.
//!
//! `AppError` deliberately does not implement `Display`, so `?` cannot turn it into an
//! `async_graphql::Error` through the blanket `Display` conversion (which would leak the
//! text); the only conversion is the one in `graphql::error`, which adds `extensions.code`.

use std::fmt;

/// A failure of a feature operation, classified by what the caller should do about it.
pub enum AppError {
    /// No credential, or one that is malformed, unknown, expired or revoked.
    Unauthenticated(&'static str),
    /// The credential lacks a permission the operation needs.
    Forbidden,
    /// The caller may not do this, for the reason given (e.g. granting a bit they lack).
    Refused(String),
    /// The object does not exist at this venue (another venue's object looks the same).
    NotFound(&'static str),
    /// The input is wrong; the message says what and how to fix it.
    BadUserInput(String),
    /// A service this operation needs (the payment provider) or a precondition of it (the
    /// venue's payment onboarding) is not available now; the message says which.
    Unavailable(String),
    /// Stored data cannot be decrypted (its key was destroyed, or the ciphertext does not
    /// belong where it is); the message says which, never the data.
    Unreadable(String),
    /// Too many attempts or requests: try again after `retry_after_secs` (lockouts, rate
    /// limits); the message says what was limited.
    RateLimited {
        /// Seconds until the next attempt may go ahead.
        retry_after_secs: u32,
        /// What was limited, for the client.
        message: String,
    },
    /// Anything else; logged with the request id, reported, and shown as "internal error".
    Internal(Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    /// The stable `extensions.code` clients branch on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden | AppError::Refused(_) => "FORBIDDEN",
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::BadUserInput(_) => "BAD_USER_INPUT",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::Unreadable(_) => "DATA_UNREADABLE",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    /// The message a client may see: never SQL, stack traces or secrets.
    pub fn client_message(&self) -> String {
        match self {
            AppError::Unauthenticated(why) => (*why).to_string(),
            AppError::Forbidden => "you do not have permission to do this".into(),
            AppError::Refused(reason) => reason.clone(),
            AppError::NotFound(what) => format!("{what} not found"),
            AppError::BadUserInput(message)
            | AppError::Unavailable(message)
            | AppError::Unreadable(message)
            | AppError::RateLimited { message, .. } => message.clone(),
            AppError::Internal(_) => "internal error".into(),
        }
    }

    /// Shorthand for a bad-input error.
    pub fn bad_input(message: impl Into<String>) -> AppError {
        AppError::BadUserInput(message.into())
    }

    /// Too many attempts: wait `retry_after_secs`.
    pub fn locked_out(retry_after_secs: u32) -> AppError {
        let message = format!("too many failed attempts; try again in {retry_after_secs} seconds");
        AppError::RateLimited { retry_after_secs, message }
    }

    /// Wraps any error as an internal one.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> AppError {
        AppError::Internal(error.into())
    }
}

impl fmt::Debug for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Internal(source) => write!(f, "Internal({source})"),
            other => write!(f, "{}({})", other.code(), other.client_message()),
        }
    }
}

/// Database constraint names that mean "bad input" or "not found", with the message to
/// show. A violated constraint that is not listed is an internal error.
const CONSTRAINT_ERRORS: &[(&str, Option<&str>, &str)] = &[
    ("venues_slug_key", None, "a venue with this slug already exists"),
    (
        "venues_slug_format",
        None,
        "slug must be 1-63 lowercase letters, digits or hyphens, not starting or ending with a hyphen",
    ),
    ("venues_currency_format", None, "currency must be a three-letter ISO 4217 code such as EUR"),
    ("staff_email_key", None, "a staff member with this email already exists"),
    ("menu_categories_name_key", None, "a menu category with this name already exists"),
    ("menu_items_category_fkey", Some("menu category"), ""),
    ("memberships_pkey", None, "this person is already a member of this venue; use setStaffPermissions"),
    ("staff_invitations_one_pending", None, "this email was just invited by someone else; try again"),
];

/// Whether `error` means the database cannot be reached right now (a restart, a failover,
/// an exhausted pool) rather than that a statement failed: connection loss, a timed out or
/// closed pool, or PostgreSQL's connection-exception and shutdown codes (class 08, 57P01–03).
pub fn database_unreachable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|code| code.starts_with("08") || ["57P01", "57P02", "57P03"].contains(&code.as_ref()))
        }
        _ => false,
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> AppError {
        // Text PostgreSQL cannot store (a NUL character) is the caller's to fix.
        if error.as_database_error().and_then(|e| e.code()).as_deref() == Some("22021") {
            return AppError::bad_input("text may not contain NUL (\\u0000) characters");
        }
        if database_unreachable(&error) {
            tracing::warn!(%error, "the database is unreachable");
            return AppError::Unavailable("the database is unreachable; retry in a moment".into());
        }
        let constraint = error.as_database_error().and_then(|e| e.constraint());
        if let Some((_, not_found, message)) = CONSTRAINT_ERRORS.iter().find(|(name, ..)| Some(*name) == constraint) {
            return match not_found {
                Some(what) => AppError::NotFound(what),
                None => AppError::BadUserInput((*message).to_string()),
            };
        }
        AppError::Internal(Box::new(error))
    }
}
