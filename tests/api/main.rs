//! Integration tests over real HTTP, each on SQLite and on PostgreSQL.
mod admin;
mod agent_health;
mod agent_protocol;
mod call_command;
mod cli;
mod contract;
mod degraded;
mod events;
mod failure_modes;
mod hostile_input;
mod idempotency;
mod media;
mod openapi;
mod signature_props;
mod signature_rules;
mod supervision;
mod webhook;
