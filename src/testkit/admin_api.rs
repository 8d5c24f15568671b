//! Typed admin API calls: each sends one request with the admin token, asserts the status the
//! API answers on success and parses the body into the API's own types.
use poem_openapi::types::ParseFromJSON;
use reqwest::{Method, StatusCode};
use serde_json::{json, Map, Value};

use super::{standard_route, standard_tenant, TestApp};
use crate::{
    api::{api_keys::NewKey, ops::RuntimeStatus, routes::Route, tenants::Tenant},
    domain::admin::{NewRoute, NewTenant},
};

impl TestApp {
    /// Creates a tenant with `POST /api/v1/tenants` (the standard name, account and auth token
    /// where `tenant` leaves them empty); asserts 201.
    pub async fn create_tenant(&self, tenant: NewTenant) -> Tenant {
        let body = tenant_body(standard_tenant(tenant));
        self.send(Method::POST, "/api/v1/tenants", Some(&body), StatusCode::CREATED)
            .await
    }

    /// Creates a route of `tenant_id` with `POST /api/v1/tenants/{id}/routes` (for the
    /// standard number unless `route` names one); asserts 201.
    pub async fn create_route(&self, tenant_id: &str, route: NewRoute) -> Route {
        let body = route_body(standard_route(route));
        let path = format!("/api/v1/tenants/{tenant_id}/routes");
        self.send(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await
    }

    /// Creates an API key of `tenant_id` with `POST /api/v1/tenants/{id}/api-keys`; asserts 201.
    pub async fn create_api_key(&self, tenant_id: &str, label: Option<&str>) -> NewKey {
        let body = match label {
            Some(label) => json!({ "label": label }),
            None => json!({}),
        };
        let path = format!("/api/v1/tenants/{tenant_id}/api-keys");
        self.send(Method::POST, &path, Some(&body), StatusCode::CREATED)
            .await
    }

    /// GETs an admin resource; asserts 200.
    pub async fn get<T: ParseFromJSON>(&self, path: &str) -> T {
        self.send(Method::GET, path, None, StatusCode::OK).await
    }

    /// PATCHes an admin resource with `changes` (`null` clears a field); asserts 200.
    pub async fn patch<T: ParseFromJSON>(&self, path: &str, changes: &Value) -> T {
        self.send(Method::PATCH, path, Some(changes), StatusCode::OK)
            .await
    }

    /// DELETEs an admin resource; asserts 204.
    pub async fn delete(&self, path: &str) {
        let res = self
            .admin(Method::DELETE, path)
            .send()
            .await
            .expect("request sent");
        assert_eq!(res.status(), StatusCode::NO_CONTENT, "DELETE {path}");
    }

    /// Turns drain mode on or off with `PUT /api/v1/runtime/drain`; asserts 200.
    pub async fn set_draining(&self, draining: bool) -> RuntimeStatus {
        let body = json!({ "draining": draining });
        self.send(Method::PUT, "/api/v1/runtime/drain", Some(&body), StatusCode::OK)
            .await
    }

    async fn send<T: ParseFromJSON>(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        expected: StatusCode,
    ) -> T {
        let mut req = self.admin(method.clone(), path);
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req.send().await.expect("request sent");
        let status = res.status();
        let text = res.text().await.expect("a body");
        assert_eq!(status, expected, "{method} {path}: {text}");
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} answered no JSON ({e}): {text}"));
        T::parse_from_json(Some(value)).unwrap_or_else(|e| {
            panic!(
                "{method} {path} answered an unexpected shape ({}): {text}",
                e.message()
            )
        })
    }
}

/// The `TenantCreate` body of `tenant`.
fn tenant_body(tenant: NewTenant) -> Value {
    let mut body = Map::new();
    body.insert("name".to_owned(), tenant.name.into());
    body.insert("account_sid".to_owned(), tenant.account_sid.into());
    body.insert("auth_token".to_owned(), tenant.auth_token.into());
    let optional = [
        (
            "secondary_auth_token",
            tenant.secondary_auth_token.map(Value::from),
        ),
        ("shared_key", tenant.shared_key.map(Value::from)),
        ("environment", tenant.environment.map(|e| Value::from(e.as_str()))),
        ("webhook_url", tenant.webhook_url.map(Value::from)),
        ("webhook_secret", tenant.webhook_secret.map(Value::from)),
        ("default_fallback", tenant.default_fallback.map(|f| json!(f))),
    ];
    insert_present(&mut body, optional);
    Value::Object(body)
}

/// The `RouteCreate` body of `route`.
fn route_body(route: NewRoute) -> Value {
    let mut body = Map::new();
    body.insert("phone_number".to_owned(), route.phone_number.into());
    let optional = [
        ("label", route.label.map(Value::from)),
        ("environment", route.environment.map(|e| Value::from(e.as_str()))),
        ("enabled", route.enabled.map(Value::from)),
        ("fallback", route.fallback.map(|f| json!(f))),
        ("agent_url", route.agent_url.map(Value::from)),
        ("agent_health_url", route.agent_health_url.map(Value::from)),
    ];
    insert_present(&mut body, optional);
    Value::Object(body)
}

fn insert_present<const N: usize>(body: &mut Map<String, Value>, fields: [(&str, Option<Value>); N]) {
    for (name, value) in fields {
        if let Some(value) = value {
            body.insert(name.to_owned(), value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{say, ACCOUNT_SID, AUTH_TOKEN, NUMBER};

    #[test]
    fn bodies_hold_the_fields_given_and_the_standard_values() {
        let tenant = tenant_body(standard_tenant(NewTenant {
            environment: Some(entity::states::TenantEnvironment::Sandbox),
            default_fallback: say("Sorry"),
            ..Default::default()
        }));
        assert_eq!(
            tenant,
            json!({
                "name": "Acme",
                "account_sid": ACCOUNT_SID,
                "auth_token": AUTH_TOKEN,
                "environment": "sandbox",
                "default_fallback": {"type": "say", "message": "Sorry"},
            })
        );
        let route = route_body(standard_route(NewRoute {
            enabled: Some(false),
            ..Default::default()
        }));
        assert_eq!(route, json!({"phone_number": NUMBER, "enabled": false}));
    }
}
