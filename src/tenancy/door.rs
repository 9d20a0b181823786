//! The explicit cross-tenant door: operator commands and seeding (jobs that visit every
//! venue use `Db::scan_venues` instead). It connects as the platform role (`DATABASE_PLATFORM_URL`), needs a
//! reason, and writes a `platform_audit_events` row in the same transaction as the work.

use sqlx::postgres::{PgConnection, PgPool};
use sqlx::{Postgres, Transaction};

use super::{VenueId, VenueTx};

/// Handle on the platform role's pool; the only source of [`PlatformTx`].
#[derive(Clone)]
pub struct CrossTenantDoor {
    pool: PgPool,
}

/// A transaction as the platform role, opened through the door (its use already audited).
/// It reaches platform-level tables directly; tenant tables only after
/// [`PlatformTx::into_venue`], one venue at a time.
pub struct PlatformTx {
    tx: Transaction<'static, Postgres>,
    actor: String,
}

impl CrossTenantDoor {
    /// Wraps the platform role's pool.
    pub fn new(pool: PgPool) -> CrossTenantDoor {
        CrossTenantDoor { pool }
    }

    /// Opens a cross-tenant transaction and records who opened it and why.
    pub async fn open_cross_tenant(&self, actor: &str, reason: &str) -> Result<PlatformTx, sqlx::Error> {
        let pool = self.pool.clone();
        let mut tx = super::uncancellable(async move { pool.begin().await }).await?;
        sqlx::query("INSERT INTO platform_audit_events (actor, reason) VALUES ($1, $2)")
            .bind(actor)
            .bind(reason)
            .execute(&mut *tx)
            .await?;
        Ok(PlatformTx { tx, actor: actor.to_string() })
    }
}

impl PlatformTx {
    /// The connection, for platform-level tables.
    pub fn conn(&mut self) -> &mut PgConnection {
        &mut self.tx
    }

    /// Who opened the door (for the audit rows of the work done through it).
    pub fn actor(&self) -> &str {
        &self.actor
    }

    /// Records what the door is being used for, beyond its opening reason (e.g. whose
    /// credentials an operator reset), in the same transaction.
    pub async fn note(&mut self, reason: &str) -> Result<(), sqlx::Error> {
        sqlx::query("INSERT INTO platform_audit_events (actor, reason) VALUES ($1, $2)")
            .bind(&self.actor)
            .bind(reason)
            .execute(&mut *self.tx)
            .await?;
        Ok(())
    }

    /// Narrows this transaction to one venue, so feature code that takes a `VenueTx` can
    /// run; the door's audit row is updated to name the venue.
    pub async fn into_venue(mut self, venue: VenueId) -> Result<VenueTx, sqlx::Error> {
        sqlx::query("INSERT INTO platform_audit_events (actor, reason, venue_id) VALUES ($1, 'enter venue scope', $2)")
            .bind(&self.actor)
            .bind(venue.as_uuid())
            .execute(&mut *self.tx)
            .await?;
        VenueTx::scope(self.tx, venue).await
    }

    /// Commits the work and its audit row together.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        let tx = self.tx;
        super::uncancellable(async move { tx.commit().await }).await
    }
}
