//! One Media Streams WebSocket session; its token id is unique, which makes tokens single use.
use sea_orm::entity::prelude::*;

use crate::states::{EndReason, MediaSessionStatus};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "media_sessions")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub call_id: String,
    #[sea_orm(unique)]
    pub token_jti: String,
    pub stream_sid: Option<String>,
    pub status: MediaSessionStatus,
    pub end_reason: Option<EndReason>,
    pub received_stop: bool,
    pub inbound_frames: i64,
    pub outbound_frames: i64,
    pub malformed_frames: i64,
    pub started_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::call::Entity",
        from = "Column::CallId",
        to = "super::call::Column::Id",
        on_delete = "Cascade"
    )]
    Call,
}

impl Related<super::call::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Call.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
