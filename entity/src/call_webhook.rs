//! The stored answer to one kind of webhook for a call: the idempotency record.
use sea_orm::entity::prelude::*;

use crate::states::WebhookKind;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, serde::Serialize, serde::Deserialize)]
#[sea_orm(table_name = "call_webhooks")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub call_id: String,
    #[sea_orm(column_type = "String(StringLen::None)")]
    pub kind: WebhookKind,
    pub attempts: i32,
    /// The answer's TwiML; empty when it is a stream answer stored as its `stream_token`.
    pub twiml: String,
    /// The stream token of a `<Connect><Stream>` answer, which is rendered from it.
    #[sea_orm(column_type = "Text", nullable)]
    pub stream_token: Option<String>,
    pub token_jti: Option<String>,
    pub token_expires_at: Option<DateTimeUtc>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
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
