//! venueql: a multi-tenant GraphQL payments-and-ordering API for hospitality venues.
//!
//! The modules, from the wiring down: `app`, `admin`, `dev`, `http`, `schema` → the
//! features (`venues`, `menu`, `auth`, `staff`, `orders`, `diners`, `payments`,
//! `retention`) → the GraphQL kernel (`graphql`) → shared vocabulary and services
//! (`access`, `config`, `audit`, `keys`, `limits`, `mail`) → the kernel (`tenancy`, `db`,
//! `crypto`, `origins`, `error`, `observability`) → PostgreSQL. `tests/architecture.rs` holds the
//! table of allowed arrows and the owner of every table; CONTRIBUTING.md describes them.

pub mod access;
pub mod admin;
pub mod app;
pub mod audit;
pub mod audit_log;
pub mod auth;
pub mod config;
pub mod crypto;
pub mod db;
pub mod dev;
pub mod diners;
pub mod error;
pub mod graphql;
pub mod http;
pub mod isolation;
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
