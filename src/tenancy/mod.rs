//! Tenant isolation, made structural: the only way to reach tenant tables is a
//! [`VenueTx`], which can only be created for one [`VenueId`] and sets the
//! transaction-local venue setting before anything else runs. Cross-tenant work goes
//! through the separately named [`CrossTenantDoor`], which uses its own database role and
//! records every use.

mod door;

pub use door::{CrossTenantDoor, PlatformTx};

use std::fmt;

use serde::Serialize;
use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

/// The transaction-local setting the row-level security policies compare `venue_id` with.
pub const VENUE_SETTING: &str = "venueql.venue_id";

/// The id of a venue (a tenant).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct VenueId(Uuid);

impl VenueId {
    /// Wraps a venue id read from a trusted source (the database, a verified token).
    pub fn from_uuid(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// The raw id.
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for VenueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The app role's connection pool. Feature code never sees the pool: it asks for a
/// [`VenueTx`], or reads platform-level tables through [`Db::platform_level`].
#[derive(Clone)]
pub struct Db {
    pool: PgPool,
}

impl Db {
    /// Wraps the app role's pool.
    pub fn new(pool: PgPool) -> Db {
        Db { pool }
    }

    /// Begins a transaction scoped to `venue`: every tenant table shows only its rows.
    /// `BEGIN` and the setting travel in one round trip (a simple-protocol batch; the
    /// value is a UUID's canonical text, so there is nothing to escape). Cancel-safe: see
    /// [`uncancellable`].
    pub async fn venue_tx(&self, venue: VenueId) -> Result<VenueTx, sqlx::Error> {
        let begin = format!("BEGIN; SELECT set_config('{VENUE_SETTING}', '{}', true)", venue.as_uuid().hyphenated());
        let pool = self.pool.clone();
        Ok(VenueTx { venue, tx: uncancellable(async move { pool.begin_with(begin).await }).await? })
    }

    /// Begins a transaction that has not chosen its venue yet: it may use the narrow
    /// private functions to find the venue a credential is bound to, then becomes a
    /// [`VenueTx`] for exactly that venue ([`ResolvingTx::into_venue`]). Cancel-safe.
    pub async fn resolving_tx(&self) -> Result<ResolvingTx, sqlx::Error> {
        let pool = self.pool.clone();
        Ok(ResolvingTx { tx: uncancellable(async move { pool.begin().await }).await? })
    }

    /// The pool for platform-level tables (venues) and the narrow private functions. No
    /// venue is set on it, so every tenant table reads as empty here.
    pub(crate) fn platform_level(&self) -> &PgPool {
        &self.pool
    }

    /// Connections in use and idle, for `/metrics`.
    pub fn pool_stats(&self) -> (u32, usize) {
        (self.pool.size(), self.pool.num_idle())
    }

    /// Closes the pool (graceful shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Runs a `BEGIN` or `COMMIT` to its end in its own task, whatever happens to the request
/// that asked for it. sqlx's `begin` is not cancel-safe (upstream issue 4393): a request
/// dropped while `BEGIN` is in flight (a client hanging up, a timeout) returns the
/// connection to the pool inside an open transaction that still holds the venue setting,
/// and the next borrower runs inside it. A dropped `COMMIT` leaves a `ROLLBACK` queued
/// behind it. In a task, the statement always completes: an unused transaction is then
/// dropped there, which queues its `ROLLBACK` before the connection is used again.
pub async fn uncancellable<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, sqlx::Error> {
    match tokio::spawn(work).await {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(sqlx::Error::Protocol(format!("the database task was cancelled: {error}"))),
    }
}

/// A transaction before its venue is known (credential resolution). Tenant tables read as
/// empty through it; it only becomes useful by turning into a [`VenueTx`].
pub struct ResolvingTx {
    tx: Transaction<'static, Postgres>,
}

impl ResolvingTx {
    /// The connection, for platform-level reads and the private lookup functions.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Scopes the transaction to the venue the credential is bound to.
    pub async fn into_venue(self, venue: VenueId) -> Result<VenueTx, sqlx::Error> {
        VenueTx::scope(self.tx, venue).await
    }

    /// Commits what was done before a venue was chosen (e.g. marking a code used).
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let tx = self.tx;
        uncancellable(async move { tx.commit().await }).await
    }
}

/// A database transaction scoped to one venue: the only handle that reaches tenant tables.
pub struct VenueTx {
    venue: VenueId,
    tx: Transaction<'static, Postgres>,
}

impl VenueTx {
    /// Sets the transaction-local venue setting on a fresh transaction.
    async fn scope(mut tx: Transaction<'static, Postgres>, venue: VenueId) -> Result<VenueTx, sqlx::Error> {
        sqlx::query("SELECT set_config($1, $2, true)")
            .bind(VENUE_SETTING)
            .bind(venue.to_string())
            .execute(&mut *tx)
            .await?;
        Ok(VenueTx { venue, tx })
    }

    /// The venue this transaction is scoped to.
    pub fn venue(&self) -> VenueId {
        self.venue
    }

    /// The connection, for running queries inside the venue scope.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Commits the transaction; the venue setting ends with it. Cancel-safe.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let tx = self.tx;
        uncancellable(async move { tx.commit().await }).await
    }
}
