//! Tenant secrets as the database holds them, read with raw SQL (past the decryption of the
//! queries), and the keys tests encrypt them with.
use sea_orm::{ConnectionTrait, Statement};

use crate::db::Pool;

/// A `VOICE_SECRETS_KEY`: base64 of 32 bytes of 0x11.
pub const SECRETS_KEY: &str = "ERERERERERERERERERERERERERERERERERERERERERE=";
/// Another key, the one rotated to: base64 of 32 bytes of 0x22.
pub const NEXT_SECRETS_KEY: &str = "IiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=";

/// The key id of a base64 key, as stored values name it.
pub fn key_id(key: &str) -> String {
    crate::secrets::Key::from_base64(key)
        .expect("a test key")
        .id()
        .to_string()
}

/// The four secret columns of a tenant row, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredTenantSecrets {
    pub auth_token: String,
    pub secondary_auth_token: Option<String>,
    pub shared_key: Option<String>,
    pub webhook_secret: String,
}

impl StoredTenantSecrets {
    /// The values set, in column order.
    pub fn values(&self) -> Vec<&str> {
        [
            Some(self.auth_token.as_str()),
            self.secondary_auth_token.as_deref(),
            self.shared_key.as_deref(),
            Some(self.webhook_secret.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// The key id of each value set (`None` for a value in clear).
    pub fn key_ids(&self) -> Vec<Option<String>> {
        self.values()
            .into_iter()
            .map(|v| crate::secrets::key_id(v).map(str::to_owned))
            .collect()
    }
}

/// The secret columns of every tenant row, by id, read with one raw `SELECT`.
pub async fn stored_tenant_secrets(db: &Pool) -> Vec<(String, StoredTenantSecrets)> {
    let rows = db
        .query_all(Statement::from_string(
            db.get_database_backend(),
            "SELECT id, auth_token, secondary_auth_token, shared_key, webhook_secret \
             FROM tenants ORDER BY id",
        ))
        .await
        .expect("tenants read");
    rows.iter()
        .map(|row| {
            let get = |column: &str| row.try_get::<Option<String>>("", column).expect(column);
            (
                get("id").expect("an id"),
                StoredTenantSecrets {
                    auth_token: get("auth_token").expect("an auth token"),
                    secondary_auth_token: get("secondary_auth_token"),
                    shared_key: get("shared_key"),
                    webhook_secret: get("webhook_secret").expect("a webhook secret"),
                },
            )
        })
        .collect()
}

/// The stored secret columns of one tenant.
pub async fn stored_secrets_of(db: &Pool, tenant_id: &str) -> StoredTenantSecrets {
    stored_tenant_secrets(db)
        .await
        .into_iter()
        .find_map(|(id, s)| (id == tenant_id).then_some(s))
        .unwrap_or_else(|| panic!("tenant {tenant_id} is stored"))
}
