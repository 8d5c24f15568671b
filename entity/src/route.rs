//! A phone route: a called number (E.164) owned by a tenant.
use sea_orm::entity::prelude::*;

use crate::states::RouteEnvironment;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "routes")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    #[sea_orm(unique)]
    pub phone_number: String,
    pub label: Option<String>,
    /// `production` or `test`.
    pub environment: RouteEnvironment,
    pub enabled: bool,
    /// Fallback action as JSON text.
    pub fallback: Option<String>,
    pub agent_url: Option<String>,
    /// HTTP(S) URL whose 2xx answer means the agent is healthy; without it the health check
    /// only opens a TCP connection to the agent's host and port.
    pub agent_health_url: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::tenant::Entity",
        from = "Column::TenantId",
        to = "super::tenant::Column::Id",
        on_delete = "Cascade"
    )]
    Tenant,
}

impl Related<super::tenant::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Tenant.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
