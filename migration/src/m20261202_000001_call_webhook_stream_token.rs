//! A `<Connect><Stream>` answer is stored as its stream token (`call_webhooks.stream_token`)
//! and its TwiML rendered from it, instead of the whole TwiML, which holds the token twice.
//! Rows stored before keep their TwiML and are answered from it.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CallWebhooks::Table)
                    .add_column(text_null(CallWebhooks::StreamToken))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(CallWebhooks::Table)
                    .drop_column(CallWebhooks::StreamToken)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum CallWebhooks {
    Table,
    StreamToken,
}
