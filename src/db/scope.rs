//! Whose records an admin query may see: every admin query takes a [`Scope`], which adds the
//! tenant filter, so a tenant's credential cannot reach another tenant's rows whatever the
//! handler does.
use entity::id::TenantId;
use sea_orm::{ColumnTrait, QueryFilter};

/// The records a query may read or change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every tenant's records and the platform's own (diagnostics and alerts of no tenant).
    Platform,
    /// One tenant's records only.
    Tenant(TenantId),
}

impl Scope {
    /// The one tenant of the scope; `None` for the platform.
    pub fn tenant(&self) -> Option<&TenantId> {
        match self {
            Self::Platform => None,
            Self::Tenant(id) => Some(id),
        }
    }

    /// Whether records of `tenant_id` are in the scope.
    pub fn includes(&self, tenant_id: &str) -> bool {
        self.tenant().is_none_or(|id| id.as_str() == tenant_id)
    }

    /// The scope of a list filtered to `tenant_id` when given: `None` when that tenant is
    /// outside this scope.
    pub fn narrowed(&self, tenant_id: Option<&str>) -> Option<Scope> {
        match (self, tenant_id) {
            (_, None) => Some(self.clone()),
            (_, Some(t)) if self.includes(t) => Some(Self::Tenant(TenantId(t.to_owned()))),
            _ => None,
        }
    }

    /// `query` restricted to the scope by its tenant `column`. A tenant scope leaves out rows
    /// of no tenant (NULL never equals an id).
    pub fn filter<Q: QueryFilter>(&self, query: Q, column: impl ColumnTrait) -> Q {
        match self {
            Self::Platform => query,
            Self::Tenant(id) => query.filter(column.eq(id.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> Scope {
        Scope::Tenant(TenantId(id.to_owned()))
    }

    #[test]
    fn the_platform_includes_every_tenant_and_a_tenant_only_itself() {
        assert!(Scope::Platform.includes("a"));
        assert!(tenant("a").includes("a"));
        assert!(!tenant("a").includes("b"));
        assert!(!tenant("a").includes(""));
    }

    #[test]
    fn a_filter_narrows_within_the_scope_and_never_out_of_it() {
        assert_eq!(Scope::Platform.narrowed(None), Some(Scope::Platform));
        assert_eq!(Scope::Platform.narrowed(Some("b")), Some(tenant("b")));
        assert_eq!(tenant("a").narrowed(None), Some(tenant("a")));
        assert_eq!(tenant("a").narrowed(Some("a")), Some(tenant("a")));
        assert_eq!(tenant("a").narrowed(Some("b")), None);
    }

    #[test]
    fn the_filter_names_the_tenant_only_for_a_tenant_scope() {
        use entity::call;
        use sea_orm::{DbBackend, EntityTrait, QueryTrait};
        let sql = |scope: Scope| {
            scope
                .filter(call::Entity::find(), call::Column::TenantId)
                .build(DbBackend::Postgres)
                .to_string()
        };
        assert!(
            !sql(Scope::Platform).contains("WHERE"),
            "{}",
            sql(Scope::Platform)
        );
        let scoped = sql(tenant("t1"));
        assert!(scoped.contains(r#"WHERE "calls"."tenant_id" = 't1'"#), "{scoped}");
    }
}
