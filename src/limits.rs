//! Rate limits and connection caps that hold for the deployment, not per process.
//!
//! Each process keeps GCRA token buckets in memory (the `governor` crate), so a check
//! costs no round trip. To keep N replicas from allowing N times the limit, every process
//! registers itself in PostgreSQL and counts the live replicas every
//! `RATE_LIMIT_SYNC_SECS` (`private.heartbeat_instance`); a request then costs as many
//! cells of its bucket as there are replicas, and a connection cap is divided by them. So
//! with even load balancing the deployment allows the configured limit; with uneven
//! balancing a client hitting one replica gets less, never more.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimitConfig;
use crate::error::AppError;
use crate::tenancy::Db;

/// What a limit counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// Operations on the diner endpoint, per client address.
    PublicPerAddress,
    /// `startCheckout`s, per client address.
    CheckoutPerAddress,
    /// `startCheckout`s, per venue.
    CheckoutPerVenue,
    /// Operations on the staff endpoint, per credential (API token, session, client).
    StaffPerCredential,
    /// Requests to `/oauth/*`, per client address.
    OauthPerAddress,
}

impl Bucket {
    fn name(self) -> &'static str {
        match self {
            Bucket::PublicPerAddress => "diner requests from this address",
            Bucket::CheckoutPerAddress => "checkouts from this address",
            Bucket::CheckoutPerVenue => "checkouts at this venue",
            Bucket::StaffPerCredential => "requests with this credential",
            Bucket::OauthPerAddress => "sign-in and token requests from this address",
        }
    }
}

type Keyed = RateLimiter<String, HashMapStateStore<String>, DefaultClock>;

/// The process's share of the deployment's limits.
#[derive(Clone)]
pub struct Limits {
    inner: Arc<Inner>,
}

struct Inner {
    enabled: bool,
    buckets: Vec<(Bucket, Keyed)>,
    replicas: AtomicU32,
    clock: DefaultClock,
    config: RateLimitConfig,
    instance: uuid::Uuid,
}

/// A refusal: wait this many seconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Seconds until a request of this kind may go ahead.
    pub retry_after_secs: u32,
    /// What was limited.
    pub message: String,
}

impl From<Limited> for AppError {
    fn from(limited: Limited) -> AppError {
        AppError::RateLimited { retry_after_secs: limited.retry_after_secs, message: limited.message }
    }
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).expect("at least one"))
}

impl Limits {
    /// The limits of `config`, for a process that has not counted its replicas yet (one).
    pub fn new(config: &RateLimitConfig) -> Limits {
        let per_minute = [
            (Bucket::PublicPerAddress, config.public_per_address),
            (Bucket::CheckoutPerAddress, config.checkout_per_address),
            (Bucket::CheckoutPerVenue, config.checkout_per_venue),
            (Bucket::StaffPerCredential, config.staff_per_credential),
            (Bucket::OauthPerAddress, config.oauth_per_address),
        ];
        let buckets = per_minute.into_iter().map(|(bucket, n)| (bucket, RateLimiter::hashmap(quota(n)))).collect();
        Limits {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                buckets,
                replicas: AtomicU32::new(1),
                clock: DefaultClock::default(),
                config: config.clone(),
                instance: uuid::Uuid::new_v4(),
            }),
        }
    }

    /// The settings these limits were made from.
    pub fn config(&self) -> &RateLimitConfig {
        &self.inner.config
    }

    /// The live replicas this process counted last (at least one: itself).
    pub fn replicas(&self) -> u32 {
        self.inner.replicas.load(Ordering::Relaxed).max(1)
    }

    /// Takes `cost` units (e.g. the operations of a batch) of `bucket` for `key`, or says
    /// how long to wait. Each unit costs one cell per live replica.
    pub fn check(&self, bucket: Bucket, key: &str, cost: u32) -> Result<(), Limited> {
        if !self.inner.enabled || cost == 0 {
            return Ok(());
        }
        let (_, limiter) = self.inner.buckets.iter().find(|(b, _)| *b == bucket).expect("every bucket is built");
        let cells = NonZeroU32::new(cost.saturating_mul(self.replicas())).expect("cost and replicas are positive");
        let refused = |retry_after_secs: u32| Limited {
            retry_after_secs: retry_after_secs.max(1),
            message: format!("too many {}; try again in {} seconds", bucket.name(), retry_after_secs.max(1)),
        };
        match limiter.check_key_n(&key.to_string(), cells) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(self.inner.clock.now());
                Err(refused(u32::try_from(wait.as_secs_f64().ceil() as u64).unwrap_or(u32::MAX)))
            }
            // More than the whole bucket at once (a large batch, or more replicas than the
            // limit has cells): never possible, so wait a full period.
            Err(_) => Err(refused(60)),
        }
    }

    /// How many connections this process may hold against a deployment-wide cap.
    pub fn share_of(&self, cap: u32) -> u32 {
        if !self.inner.enabled {
            return u32::MAX;
        }
        (cap / self.replicas()).max(1)
    }

    /// Registers this process and counts the live replicas, now and every
    /// `RATE_LIMIT_SYNC_SECS`; forgets idle keys once a minute.
    pub fn spawn_sync(&self, db: Db) {
        let limits = self.clone();
        tokio::spawn(async move {
            let mut ticks = 0u64;
            loop {
                match heartbeat(&db, limits.inner.instance, limits.inner.config.sync_interval).await {
                    Ok(live) => limits.inner.replicas.store(live.max(1), Ordering::Relaxed),
                    Err(error) => {
                        tracing::warn!(error = ?error, "could not count the replicas; keeping the last count")
                    }
                }
                ticks += 1;
                if ticks.is_multiple_of(12) {
                    for (_, limiter) in &limits.inner.buckets {
                        limiter.retain_recent();
                    }
                }
                tokio::time::sleep(limits.inner.config.sync_interval).await;
            }
        });
    }

    /// Removes this process from the replica count (graceful shutdown).
    pub async fn retire(&self, db: &Db) {
        let _ = sqlx::query("SELECT private.retire_instance($1)")
            .bind(self.inner.instance)
            .execute(db.platform_level())
            .await;
    }
}

/// Marks this process alive and counts the processes seen within three sync intervals.
async fn heartbeat(db: &Db, instance: uuid::Uuid, interval: Duration) -> Result<u32, AppError> {
    let window = i32::try_from((interval * 3).as_secs()).unwrap_or(i32::MAX).max(3);
    let live: i32 = sqlx::query_scalar("SELECT private.heartbeat_instance($1, $2)")
        .bind(instance)
        .bind(window)
        .fetch_one(db.platform_level())
        .await?;
    Ok(u32::try_from(live).unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RateLimitConfig {
        RateLimitConfig { checkout_per_address: 10, ..RateLimitConfig::default() }
    }

    #[test]
    fn a_bucket_allows_its_limit_then_says_how_long_to_wait() {
        let limits = Limits::new(&config());
        for _ in 0..10 {
            limits.check(Bucket::CheckoutPerAddress, "192.0.2.1", 1).unwrap();
        }
        let refused = limits.check(Bucket::CheckoutPerAddress, "192.0.2.1", 1).unwrap_err();
        assert!((1..=6).contains(&refused.retry_after_secs), "{refused:?}");
        assert!(refused.message.contains("checkouts from this address"));
        assert!(limits.check(Bucket::CheckoutPerAddress, "192.0.2.2", 1).is_ok(), "another key has its own bucket");
    }

    #[test]
    fn each_replica_takes_its_share_so_the_deployment_keeps_the_limit() {
        let limits = Limits::new(&config());
        limits.inner.replicas.store(2, Ordering::Relaxed);
        let allowed = (0..10).filter(|_| limits.check(Bucket::CheckoutPerAddress, "k", 1).is_ok()).count();
        assert_eq!(allowed, 5, "two replicas: half the limit each");
        assert_eq!(limits.share_of(100), 50);
        limits.inner.replicas.store(11, Ordering::Relaxed);
        assert!(limits.check(Bucket::CheckoutPerAddress, "other", 1).is_err(), "more replicas than cells");
        assert_eq!(limits.share_of(5), 1, "a cap never drops below one per replica");
    }

    #[test]
    fn disabled_limits_allow_everything() {
        let limits =
            Limits::new(&RateLimitConfig { enabled: false, checkout_per_address: 1, ..RateLimitConfig::default() });
        for _ in 0..100 {
            limits.check(Bucket::CheckoutPerAddress, "k", 1).unwrap();
        }
    }
}
