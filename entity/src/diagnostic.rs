//! An operator diagnostic aggregated by (kind, key): counts, first and last seen, and a
//! tumbling window count used for alerting.
use sea_orm::entity::prelude::*;

use crate::states::DiagnosticKind;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "diagnostics")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub kind: DiagnosticKind,
    pub key: String,
    pub tenant_id: Option<String>,
    pub route_id: Option<String>,
    pub detail: Option<String>,
    pub count: i64,
    pub first_seen: DateTimeUtc,
    pub last_seen: DateTimeUtc,
    pub window_start: DateTimeUtc,
    pub window_count: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
