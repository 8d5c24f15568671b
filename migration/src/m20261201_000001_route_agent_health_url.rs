//! Routes may name an HTTP health endpoint of their agent runtime (`agent_health_url`).
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Routes::Table)
                    .add_column(string_null(Routes::AgentHealthUrl))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Routes::Table)
                    .drop_column(Routes::AgentHealthUrl)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum Routes {
    Table,
    AgentHealthUrl,
}
