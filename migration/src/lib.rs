//! Database migrations of stateset-voice; each runs on SQLite and PostgreSQL.
pub use sea_orm_migration::prelude::*;

mod m20261124_000001_create_schema;
mod m20261201_000001_route_agent_health_url;
mod m20261202_000001_call_webhook_stream_token;
mod m20261203_000001_api_keys;
mod m20261203_000002_retention_indexes;
mod m20261206_000001_outbox_due_pending;

/// All migrations, oldest first.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261124_000001_create_schema::Migration),
            Box::new(m20261201_000001_route_agent_health_url::Migration),
            Box::new(m20261202_000001_call_webhook_stream_token::Migration),
            Box::new(m20261203_000001_api_keys::Migration),
            Box::new(m20261203_000002_retention_indexes::Migration),
            Box::new(m20261206_000001_outbox_due_pending::Migration),
        ]
    }
}
