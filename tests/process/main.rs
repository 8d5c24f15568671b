//! Reliability tests over real server processes: the `stateset-voice` binary killed mid-load
//! and restarted, drained by SIGTERM with live media streams, two instances sharing one
//! PostgreSQL schema, and what `serve` runs beside the HTTP server; CLI subcommands that write
//! to the database.
mod backup;
mod crash;
mod drain;
mod json_logs;
mod multi_instance;
mod outage;
mod secrets;
mod serve;
mod support;
mod tenant_cli;
