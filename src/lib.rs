//! venueql: a multi-tenant GraphQL payments-and-ordering API for hospitality venues.
//!
//! The modules, from the wiring down (the same layers as `ROOMS` in
//! `tests/architecture.rs`, which holds the table of allowed arrows and the owner of every
//! table; CONTRIBUTING.md describes them):
//!
//! - the wiring: `app` (start and stop), `http` (routes), `schema` (the two schemas
//!   assembled), `admin` (operator commands), `dev` (`venueql dev`), `verify_isolation`
//!   (the `venueql verify-isolation` command: a client of a deployment, using no module);
//! - the features: `venues`, `menu`, `auth`, `staff`, `orders`, `diners`, `payments`,
//!   `retention`, and `audit_graphql` (the audit log's GraphQL surface);
//! - the GraphQL kernel: `graphql` (request context, permission guards, request
//!   guardrails and the document budget, error conversion);
//! - shared vocabulary and services: `access` (permissions, declared once), `config`,
//!   `audit`, `keys`, `limits`, `mail`;
//! - the kernel: `tenancy`, `db`, `crypto`, `origins`, `error`, `observability`;
//! - and below them all, PostgreSQL.

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod audit_graphql;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dev;
pub mod diners;
pub mod error;
pub mod graphql;
pub mod http;
pub mod keys;
pub mod limits;
pub mod mail;
pub mod menu;
pub mod observability;
pub mod orders;
pub mod origins;
pub mod payments;
pub mod retention;
pub mod schema;
pub mod staff;
pub mod tenancy;
pub mod venues;
pub mod verify_isolation;
