//! Indexes the retention purge deletes by: calls by creation time, finished (not pending)
//! outbox events by creation time, diagnostics by when they were last seen, alerts by creation time.
//! Without them each purge batch would scan its whole table.
use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let indexes = [
            Index::create()
                .name("idx_calls_created")
                .table(Calls::Table)
                .col(Calls::CreatedAt)
                .to_owned(),
            // Partial: only finished events, the ones the purge may delete, so the oldest of
            // them are found in index order however many events are pending.
            Index::create()
                .name("idx_outbox_finished_created")
                .table(OutboxEvents::Table)
                .col(OutboxEvents::CreatedAt)
                .and_where(Expr::col(OutboxEvents::Status).ne("pending"))
                .to_owned(),
            Index::create()
                .name("idx_diagnostics_last_seen")
                .table(Diagnostics::Table)
                .col(Diagnostics::LastSeen)
                .to_owned(),
            Index::create()
                .name("idx_alerts_created")
                .table(Alerts::Table)
                .col(Alerts::CreatedAt)
                .to_owned(),
        ];
        for index in indexes {
            manager.create_index(index).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let indexes = [
            Index::drop()
                .name("idx_calls_created")
                .table(Calls::Table)
                .to_owned(),
            Index::drop()
                .name("idx_outbox_finished_created")
                .table(OutboxEvents::Table)
                .to_owned(),
            Index::drop()
                .name("idx_diagnostics_last_seen")
                .table(Diagnostics::Table)
                .to_owned(),
            Index::drop()
                .name("idx_alerts_created")
                .table(Alerts::Table)
                .to_owned(),
        ];
        for index in indexes {
            manager.drop_index(index).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum Calls {
    Table,
    CreatedAt,
}

#[derive(DeriveIden)]
enum OutboxEvents {
    Table,
    Status,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Diagnostics {
    Table,
    LastSeen,
}

#[derive(DeriveIden)]
enum Alerts {
    Table,
    CreatedAt,
}
