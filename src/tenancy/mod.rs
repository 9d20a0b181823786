//! Tenant isolation, made structural: the only way to reach tenant tables is a
//! [`VenueTx`], which can only be created for one [`VenueId`] and sets the
//! transaction-local venue setting before anything else runs. Outside a venue there are
//! only [`Db::resolving_tx`] (until a credential's venue is known), [`Db::platform_level`]
//! (one statement at a time) and [`Db::listen`]. Jobs list venues with
//! [`Db::scan_venues`], recorded in `platform_audit_events`; operator work goes through
//! the separately named [`CrossTenantDoor`], which uses its own role and records every use.

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

/// A `VenueId` is made only here, by a constructor naming the trusted source the id was
/// read from; the architecture test holds each constructor to the rooms that read that
/// source. Nothing turns a client's text into a `VenueId`.
impl VenueId {
    /// The venue a verified credential is bound to: an API token, a session or
    /// authorization code, a terminal or integration client, an invitation link, or the
    /// venue a signed-in person chose among their memberships (`auth`, `staff`, `http`).
    pub fn from_credential(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// A venue row read by slug or id (`venues`).
    pub fn from_row(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// The venue that created a PaymentIntent or owns a connected account, from the
    /// private routing index (`payments`).
    pub fn from_payment_route(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// A venue named on the platform role's side of the cross-tenant door (operator
    /// commands, seeding, key rotation, audit verification).
    pub fn from_door(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// A venue whose audit chain has rows the WORM copy lacks, from the chain heads the
    /// audit trigger keeps (`audit`).
    pub fn from_audit_head(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// The venue of an order notification channel this process listens to (`orders`).
    pub fn from_notification(id: Uuid) -> VenueId {
        VenueId(id)
    }

    /// A venue id for unit tests.
    #[cfg(test)]
    pub fn for_tests() -> VenueId {
        VenueId(Uuid::new_v4())
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
    /// Whether the pool reaches PostgreSQL through a transaction-pooling proxy
    /// (PgBouncer `pool_mode = transaction`): every statement then runs inside a
    /// transaction, the only unit such a proxy keeps on one server connection.
    transaction_pooled: bool,
    /// Where LISTEN connects (a session of its own, never through such a proxy).
    listen_url: Option<std::sync::Arc<secrecy::SecretString>>,
}

impl Db {
    /// Wraps the app role's pool, connected to PostgreSQL directly.
    pub fn new(pool: PgPool) -> Db {
        Db { pool, transaction_pooled: false, listen_url: None }
    }

    /// The same pool, known to reach PostgreSQL through a transaction-pooling proxy
    /// (`DATABASE_POOL_MODE=transaction`): see [`Db::begin`] and [`PlatformLevel`].
    pub fn behind_transaction_pooler(self) -> Db {
        Db { transaction_pooled: true, ..self }
    }

    /// LISTEN connects to `url` (`DATABASE_LISTEN_URL`) instead of the pool's server.
    pub fn listening_at(self, url: secrecy::SecretString) -> Db {
        Db { listen_url: Some(std::sync::Arc::new(url)), ..self }
    }

    /// Begins a transaction scoped to `venue`: every tenant table shows only its rows.
    /// `BEGIN` and the setting travel in one round trip (a simple-protocol batch; the
    /// value is a UUID's canonical text, so there is nothing to escape). Cancel-safe: see
    /// [`uncancellable`].
    pub async fn venue_tx(&self, venue: VenueId) -> Result<VenueTx, sqlx::Error> {
        let begin =
            format!("{}; SELECT set_config('{VENUE_SETTING}', '{}', true)", self.begin(), venue.as_uuid().hyphenated());
        let pool = self.pool.clone();
        Ok(VenueTx { venue, tx: uncancellable(async move { pool.begin_with(begin).await }).await? })
    }

    /// Begins a transaction that has not chosen its venue yet: it may use the narrow
    /// private functions to find the venue a credential is bound to, then becomes a
    /// [`VenueTx`] for exactly that venue ([`ResolvingTx::into_venue`]). Cancel-safe.
    pub async fn resolving_tx(&self) -> Result<ResolvingTx, sqlx::Error> {
        let (pool, begin) = (self.pool.clone(), self.begin());
        Ok(ResolvingTx { tx: uncancellable(async move { pool.begin_with(begin).await }).await? })
    }

    /// How a transaction starts. Behind a transaction pooler the server connection may
    /// still hold statements another client prepared (sqlx names each statement, cache or
    /// not, and a transaction that ended in an error never cleaned up): they are dropped
    /// first, in the same round trip, so that names cannot collide.
    fn begin(&self) -> &'static str {
        if self.transaction_pooled { "BEGIN; DEALLOCATE ALL" } else { "BEGIN" }
    }

    /// Single statements outside any venue (platform-level tables such as `venues`, and
    /// the narrow private functions: token verification, lockout counters, the mail
    /// outbox…). No venue is set, so every tenant table reads as empty here; and the
    /// handle can run only one statement at a time: no held connection, no transaction
    /// spanning statements (behind a transaction pooler each runs in one of its own).
    pub fn platform_level(&self) -> PlatformLevel<'_> {
        PlatformLevel { pool: &self.pool, in_transaction: self.transaction_pooled }
    }

    /// Lists every venue for a job that visits them all, recording the scan (`actor`,
    /// `reason`) in `platform_audit_events` in the same statement. The only cross-venue
    /// listing the app role has; each venue is then visited in its own [`VenueTx`].
    pub async fn scan_venues(&self, actor: &str, reason: &str) -> Result<Vec<VenueId>, sqlx::Error> {
        let ids: Vec<Uuid> = sqlx::query_scalar("SELECT private.open_venue_scan($1, $2)")
            .bind(actor)
            .bind(reason)
            .fetch_all(self.platform_level())
            .await?;
        Ok(ids.into_iter().map(VenueId).collect())
    }

    /// Opens a LISTEN connection of the app role on `channels`. A lost connection is not
    /// repaired silently: [`Listener::next`] reports it (`Ok(None)`), so the caller knows
    /// notifications may have been missed.
    pub async fn listen(&self, channels: &[&str]) -> Result<Listener, sqlx::Error> {
        let mut listener = match &self.listen_url {
            Some(url) => {
                sqlx::postgres::PgListener::connect(secrecy::ExposeSecret::expose_secret(url.as_ref())).await?
            }
            None => sqlx::postgres::PgListener::connect_with(&self.pool).await?,
        };
        listener.eager_reconnect(false);
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Listener(listener))
    }

    /// Whether the pool was closed (the server is stopping).
    pub fn is_closed(&self) -> bool {
        self.pool.is_closed()
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

/// A LISTEN connection (see [`Db::listen`]). Notifications carry ids only: whoever
/// receives one re-reads what it names under its own venue's scope.
pub struct Listener(sqlx::postgres::PgListener);

impl Listener {
    /// Listens to one more channel.
    pub async fn listen(&mut self, channel: &str) -> Result<(), sqlx::Error> {
        self.0.listen(channel).await
    }

    /// Stops listening to a channel.
    pub async fn unlisten(&mut self, channel: &str) -> Result<(), sqlx::Error> {
        self.0.unlisten(channel).await
    }

    /// The next notification as (channel, payload); `Ok(None)` when the connection was
    /// lost. Cancel-safe.
    pub async fn next(&mut self) -> Result<Option<(String, String)>, sqlx::Error> {
        Ok(self.0.try_recv().await?.map(|n| (n.channel().to_string(), n.payload().to_string())))
    }
}

/// One statement at a time outside any venue: the only way feature code reaches the
/// database without a [`VenueTx`] or [`ResolvingTx`] (see [`Db::platform_level`]).
/// Behind a transaction-pooling proxy each statement runs in a transaction of its own:
/// sqlx prepares and executes an unnamed statement in two round trips, and only a
/// transaction keeps both on the same server connection.
#[derive(Clone, Copy, Debug)]
pub struct PlatformLevel<'a> {
    pool: &'a PgPool,
    in_transaction: bool,
}

type PgStep = sqlx::Either<sqlx::postgres::PgQueryResult, sqlx::postgres::PgRow>;

/// Begins the transaction a pooled platform-level statement runs in (see [`Db::begin`]).
/// Cancel-safe.
async fn begin_own(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let pool = pool.clone();
    uncancellable(async move { pool.begin_with("BEGIN; DEALLOCATE ALL").await }).await
}

/// Commits it. Cancel-safe.
async fn commit_own(tx: Transaction<'static, Postgres>) -> Result<(), sqlx::Error> {
    uncancellable(async move { tx.commit().await }).await
}

impl<'c> sqlx::Executor<'c> for PlatformLevel<'c> {
    type Database = Postgres;

    fn fetch_many<'e, 'q: 'e, E>(self, query: E) -> futures_util::stream::BoxStream<'e, Result<PgStep, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        use futures_util::{StreamExt, TryStreamExt};
        if !self.in_transaction {
            return sqlx::Executor::fetch_many(self.pool, query);
        }
        let pool = self.pool;
        let steps = async move {
            let mut tx = begin_own(pool).await?;
            let steps: Vec<PgStep> = tx.fetch_many(query).try_collect().await?;
            commit_own(tx).await?;
            Ok::<_, sqlx::Error>(steps)
        };
        futures_util::stream::once(steps)
            .flat_map(|steps| match steps {
                Ok(steps) => futures_util::stream::iter(steps.into_iter().map(Ok).collect::<Vec<_>>()),
                Err(error) => futures_util::stream::iter(vec![Err(error)]),
            })
            .boxed()
    }

    fn fetch_optional<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> futures_util::future::BoxFuture<'e, Result<Option<sqlx::postgres::PgRow>, sqlx::Error>>
    where
        'c: 'e,
        E: 'q + sqlx::Execute<'q, Postgres>,
    {
        use futures_util::FutureExt;
        if !self.in_transaction {
            return sqlx::Executor::fetch_optional(self.pool, query);
        }
        let pool = self.pool;
        async move {
            let mut tx = begin_own(pool).await?;
            let row = tx.fetch_optional(query).await?;
            commit_own(tx).await?;
            Ok(row)
        }
        .boxed()
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::postgres::PgTypeInfo],
    ) -> futures_util::future::BoxFuture<'e, Result<sqlx::postgres::PgStatement<'q>, sqlx::Error>>
    where
        'c: 'e,
    {
        sqlx::Executor::prepare_with(self.pool, sql, parameters)
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> futures_util::future::BoxFuture<'e, Result<sqlx::Describe<Postgres>, sqlx::Error>>
    where
        'c: 'e,
    {
        sqlx::Executor::describe(self.pool, sql)
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
