//! Integration tests over real HTTP, each on SQLite and on PostgreSQL.
mod admin;
mod cli;
mod events;
mod failure_modes;
mod idempotency;
mod media;
mod openapi;
mod signature_rules;
mod webhook;
