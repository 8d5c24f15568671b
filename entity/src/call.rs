//! One inbound call (unique CallSid) and what the service decided for it.
use sea_orm::entity::prelude::*;

use crate::states::{CallStatus, FallbackReason, Outcome};

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "calls")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    #[sea_orm(unique)]
    pub call_sid: String,
    pub tenant_id: String,
    pub route_id: String,
    pub from_number: String,
    pub to_number: String,
    /// Twilio's latest `CallStatus`.
    pub status: CallStatus,
    pub outcome: Outcome,
    pub fallback_reason: Option<FallbackReason>,
    /// Deliveries of the call's voice webhook (primary or fallback URL).
    pub attempts: i32,
    pub error_code: Option<String>,
    pub error_url: Option<String>,
    pub duration_secs: Option<i32>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub ended_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::media_session::Entity")]
    MediaSession,
    #[sea_orm(has_many = "super::call_webhook::Entity")]
    CallWebhook,
}

impl Related<super::media_session::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::MediaSession.def()
    }
}

impl Related<super::call_webhook::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::CallWebhook.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
