//! A tenant API key: a bearer credential scoped to one tenant. Only the SHA-256 of the key is
//! stored, with a short prefix to recognise it by; revoked keys are kept, marked `revoked_at`.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "api_keys")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: String,
    /// Lower-case hex SHA-256 of the whole key (`sk_...`).
    #[sea_orm(unique)]
    pub key_hash: String,
    /// `sk_` and the first characters of the key, for display.
    pub prefix: String,
    pub label: Option<String>,
    pub created_at: DateTimeUtc,
    /// When the key last authenticated a request (updated at most about once a minute).
    pub last_used_at: Option<DateTimeUtc>,
    /// When the key was revoked; it authenticates nothing from then on.
    pub revoked_at: Option<DateTimeUtc>,
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
