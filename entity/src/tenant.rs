//! A customer account: its Twilio credentials and where its events go.
use sea_orm::entity::prelude::*;

use crate::states::TenantEnvironment;

#[derive(Clone, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "tenants")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub name: String,
    #[sea_orm(unique)]
    pub account_sid: String,
    pub auth_token: String,
    pub secondary_auth_token: Option<String>,
    pub shared_key: Option<String>,
    /// `production` or `sandbox`.
    pub environment: TenantEnvironment,
    pub webhook_url: Option<String>,
    pub webhook_secret: String,
    /// Fallback action as JSON text.
    pub default_fallback: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

/// Secrets never print, not even in debug output.
impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("tenant::Model")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("account_sid", &self.account_sid)
            .field("environment", &self.environment)
            .finish_non_exhaustive()
    }
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::route::Entity")]
    Route,
}

impl Related<super::route::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Route.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
