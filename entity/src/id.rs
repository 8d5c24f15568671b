//! Record ids: UUIDv7 strings, so ordering by id is ordering by creation time. The newtypes
//! are for signatures where two ids meet, so they cannot be swapped.

/// A new record id.
pub fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

macro_rules! id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub String);

        impl $name {
            /// The id as stored.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id!(
    /// A `calls.id`.
    CallId
);
id!(
    /// A `call_webhooks.id`: one stored answer.
    WebhookId
);
id!(
    /// A `tenants.id`.
    TenantId
);
id!(
    /// A `routes.id`.
    RouteId
);
id!(
    /// An `api_keys.id`: one tenant API key.
    ApiKeyId
);

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_creation() {
        let (a, b) = (super::new_id(), super::new_id());
        assert!(a < b);
    }
}
