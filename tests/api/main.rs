//! The integration suite: one binary, one throwaway PostgreSQL cluster per run, one
//! database per test (cloned from a migrated template), the real server on port 0,
//! connecting as the app role.

mod apps;
mod audit_log;
mod helpers;
mod smtp;

mod browser;
mod cancel;
mod catalogue;
mod cli;
mod cors;
mod cross_tenant;
mod dev;
mod diners;
mod fuzz;
mod hostile;
mod identity;
mod isolation;
mod limits;
mod menu;
mod oauth;
mod ops;
mod payments;
mod pgbouncer;
mod queue_snapshot;
mod rate_limits;
mod replicas;
mod retention;
mod schema;
pub mod sentry;
mod staff;
mod subscription;
mod survival;
mod tenancy;
mod tls;
mod tokens;
mod webdriver;
mod webhooks;
mod worm;
