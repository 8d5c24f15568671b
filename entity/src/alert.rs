//! A raised alert, e.g. repeated signature failures on a production route.
use sea_orm::entity::prelude::*;

use crate::states::DiagnosticKind;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "alerts")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: String,
    pub tenant_id: Option<String>,
    pub route_id: Option<String>,
    pub kind: DiagnosticKind,
    pub message: String,
    pub failure_count: i64,
    pub window_start: DateTimeUtc,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
