//! Tenants, phone routes, calls and their webhook answers, media sessions, the outbox,
//! aggregated diagnostics and alerts.
use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Tenants::Table)
                    .col(string(Tenants::Id).primary_key())
                    .col(string(Tenants::Name))
                    .col(string_uniq(Tenants::AccountSid))
                    .col(string(Tenants::AuthToken))
                    .col(string_null(Tenants::SecondaryAuthToken))
                    .col(string_null(Tenants::SharedKey))
                    .col(string(Tenants::Environment))
                    .col(string_null(Tenants::WebhookUrl))
                    .col(string(Tenants::WebhookSecret))
                    .col(text_null(Tenants::DefaultFallback))
                    .col(timestamp_with_time_zone(Tenants::CreatedAt))
                    .col(timestamp_with_time_zone(Tenants::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Routes::Table)
                    .col(string(Routes::Id).primary_key())
                    .col(string(Routes::TenantId))
                    .col(string_uniq(Routes::PhoneNumber))
                    .col(string_null(Routes::Label))
                    .col(string(Routes::Environment))
                    .col(boolean(Routes::Enabled))
                    .col(text_null(Routes::Fallback))
                    .col(string_null(Routes::AgentUrl))
                    .col(timestamp_with_time_zone(Routes::CreatedAt))
                    .col(timestamp_with_time_zone(Routes::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Routes::Table, Routes::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_routes_tenant",
            Routes::Table,
            &[Routes::TenantId, Routes::Id],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Calls::Table)
                    .col(string(Calls::Id).primary_key())
                    .col(string_uniq(Calls::CallSid))
                    .col(string(Calls::TenantId))
                    .col(string(Calls::RouteId))
                    .col(string(Calls::FromNumber))
                    .col(string(Calls::ToNumber))
                    .col(string(Calls::Status))
                    .col(string(Calls::Outcome))
                    .col(string_null(Calls::FallbackReason))
                    .col(integer(Calls::Attempts))
                    .col(string_null(Calls::ErrorCode))
                    .col(string_null(Calls::ErrorUrl))
                    .col(integer_null(Calls::DurationSecs))
                    .col(timestamp_with_time_zone(Calls::CreatedAt))
                    .col(timestamp_with_time_zone(Calls::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Calls::EndedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Calls::Table, Calls::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Calls::Table, Calls::RouteId)
                            .to(Routes::Table, Routes::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_calls_tenant",
            Calls::Table,
            &[Calls::TenantId, Calls::Id],
        )
        .await?;
        index(manager, "idx_calls_route", Calls::Table, &[Calls::RouteId]).await?;

        manager
            .create_table(
                Table::create()
                    .table(CallWebhooks::Table)
                    .col(string(CallWebhooks::Id).primary_key())
                    .col(string(CallWebhooks::CallId))
                    .col(string(CallWebhooks::Kind))
                    .col(integer(CallWebhooks::Attempts))
                    .col(text(CallWebhooks::Twiml))
                    .col(string_null(CallWebhooks::TokenJti))
                    .col(timestamp_with_time_zone_null(CallWebhooks::TokenExpiresAt))
                    .col(timestamp_with_time_zone(CallWebhooks::CreatedAt))
                    .col(timestamp_with_time_zone(CallWebhooks::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(CallWebhooks::Table, CallWebhooks::CallId)
                            .to(Calls::Table, Calls::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "uq_call_webhooks_call_kind",
            CallWebhooks::Table,
            &[CallWebhooks::CallId, CallWebhooks::Kind],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(MediaSessions::Table)
                    .col(string(MediaSessions::Id).primary_key())
                    .col(string(MediaSessions::CallId))
                    .col(string_uniq(MediaSessions::TokenJti))
                    .col(string_null(MediaSessions::StreamSid))
                    .col(string(MediaSessions::Status))
                    .col(string_null(MediaSessions::EndReason))
                    .col(boolean(MediaSessions::ReceivedStop))
                    .col(big_integer(MediaSessions::InboundFrames))
                    .col(big_integer(MediaSessions::OutboundFrames))
                    .col(big_integer(MediaSessions::MalformedFrames))
                    .col(timestamp_with_time_zone(MediaSessions::StartedAt))
                    .col(timestamp_with_time_zone_null(MediaSessions::EndedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(MediaSessions::Table, MediaSessions::CallId)
                            .to(Calls::Table, Calls::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_media_sessions_call",
            MediaSessions::Table,
            &[MediaSessions::CallId],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(OutboxEvents::Table)
                    .col(string(OutboxEvents::Id).primary_key())
                    .col(string(OutboxEvents::TenantId))
                    .col(string(OutboxEvents::EventType))
                    .col(text(OutboxEvents::Payload))
                    .col(string(OutboxEvents::Status))
                    .col(integer(OutboxEvents::Attempts))
                    .col(timestamp_with_time_zone(OutboxEvents::NextAttemptAt))
                    .col(text_null(OutboxEvents::LastError))
                    .col(timestamp_with_time_zone(OutboxEvents::CreatedAt))
                    .col(timestamp_with_time_zone_null(OutboxEvents::DeliveredAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(OutboxEvents::Table, OutboxEvents::TenantId)
                            .to(Tenants::Table, Tenants::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_outbox_due",
            OutboxEvents::Table,
            &[OutboxEvents::Status, OutboxEvents::NextAttemptAt],
        )
        .await?;
        index(
            manager,
            "idx_outbox_tenant",
            OutboxEvents::Table,
            &[OutboxEvents::TenantId, OutboxEvents::Id],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Diagnostics::Table)
                    .col(string(Diagnostics::Id).primary_key())
                    .col(string(Diagnostics::Kind))
                    .col(string(Diagnostics::Key))
                    .col(string_null(Diagnostics::TenantId))
                    .col(string_null(Diagnostics::RouteId))
                    .col(text_null(Diagnostics::Detail))
                    .col(big_integer(Diagnostics::Count))
                    .col(timestamp_with_time_zone(Diagnostics::FirstSeen))
                    .col(timestamp_with_time_zone(Diagnostics::LastSeen))
                    .col(timestamp_with_time_zone(Diagnostics::WindowStart))
                    .col(big_integer(Diagnostics::WindowCount))
                    .to_owned(),
            )
            .await?;
        unique(
            manager,
            "uq_diagnostics_kind_key",
            Diagnostics::Table,
            &[Diagnostics::Kind, Diagnostics::Key],
        )
        .await?;

        manager
            .create_table(
                Table::create()
                    .table(Alerts::Table)
                    .col(string(Alerts::Id).primary_key())
                    .col(string_null(Alerts::TenantId))
                    .col(string_null(Alerts::RouteId))
                    .col(string(Alerts::Kind))
                    .col(text(Alerts::Message))
                    .col(big_integer(Alerts::FailureCount))
                    .col(timestamp_with_time_zone(Alerts::WindowStart))
                    .col(timestamp_with_time_zone(Alerts::CreatedAt))
                    .to_owned(),
            )
            .await?;
        index(
            manager,
            "idx_alerts_tenant",
            Alerts::Table,
            &[Alerts::TenantId, Alerts::Id],
        )
        .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Alerts::Table.into_iden(),
            Diagnostics::Table.into_iden(),
            OutboxEvents::Table.into_iden(),
            MediaSessions::Table.into_iden(),
            CallWebhooks::Table.into_iden(),
            Calls::Table.into_iden(),
            Routes::Table.into_iden(),
            Tenants::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

async fn index<T: Iden + Clone + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[T],
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table);
    for col in cols {
        stmt.col(col.clone());
    }
    manager.create_index(stmt.to_owned()).await
}

async fn unique<T: Iden + Clone + 'static>(
    manager: &SchemaManager<'_>,
    name: &str,
    table: T,
    cols: &[T],
) -> Result<(), DbErr> {
    let mut stmt = Index::create();
    stmt.name(name).table(table).unique();
    for col in cols {
        stmt.col(col.clone());
    }
    manager.create_index(stmt.to_owned()).await
}

#[derive(DeriveIden, Clone)]
enum Tenants {
    Table,
    Id,
    Name,
    AccountSid,
    AuthToken,
    SecondaryAuthToken,
    SharedKey,
    Environment,
    WebhookUrl,
    WebhookSecret,
    DefaultFallback,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
enum Routes {
    Table,
    Id,
    TenantId,
    PhoneNumber,
    Label,
    Environment,
    Enabled,
    Fallback,
    AgentUrl,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
enum Calls {
    Table,
    Id,
    CallSid,
    TenantId,
    RouteId,
    FromNumber,
    ToNumber,
    Status,
    Outcome,
    FallbackReason,
    Attempts,
    ErrorCode,
    ErrorUrl,
    DurationSecs,
    CreatedAt,
    UpdatedAt,
    EndedAt,
}

#[derive(DeriveIden, Clone)]
enum CallWebhooks {
    Table,
    Id,
    CallId,
    Kind,
    Attempts,
    Twiml,
    TokenJti,
    TokenExpiresAt,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden, Clone)]
enum MediaSessions {
    Table,
    Id,
    CallId,
    TokenJti,
    StreamSid,
    Status,
    EndReason,
    ReceivedStop,
    InboundFrames,
    OutboundFrames,
    MalformedFrames,
    StartedAt,
    EndedAt,
}

#[derive(DeriveIden, Clone)]
enum OutboxEvents {
    Table,
    Id,
    TenantId,
    EventType,
    Payload,
    Status,
    Attempts,
    NextAttemptAt,
    LastError,
    CreatedAt,
    DeliveredAt,
}

#[derive(DeriveIden, Clone)]
enum Diagnostics {
    Table,
    Id,
    Kind,
    Key,
    TenantId,
    RouteId,
    Detail,
    Count,
    FirstSeen,
    LastSeen,
    WindowStart,
    WindowCount,
}

#[derive(DeriveIden, Clone)]
enum Alerts {
    Table,
    Id,
    TenantId,
    RouteId,
    Kind,
    Message,
    FailureCount,
    WindowStart,
    CreatedAt,
}
