//! The `Allow` header of every 405 (RFC 9110, section 15.5.6): the methods the request's path
//! answers, from the published document's paths and the routes outside it.
use std::sync::Arc;

use poem::{
    http::{header::ALLOW, HeaderValue, Method, StatusCode},
    Endpoint, IntoResponse, Middleware, Request, Response, Result,
};
use serde_yaml::Value;

/// One segment of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `{name}` or `:name`: any one segment.
    Param,
}

/// The methods of each path template.
#[derive(Debug, Clone, Default)]
pub struct Methods {
    routes: Vec<(Vec<Segment>, Vec<Method>)>,
}

fn segments(template: &str) -> Vec<Segment> {
    template
        .split('/')
        .map(|s| {
            if s.starts_with(':') || (s.starts_with('{') && s.ends_with('}')) {
                Segment::Param
            } else {
                Segment::Literal(s.to_owned())
            }
        })
        .collect()
}

impl Methods {
    /// The operations of an OpenAPI document's `paths`.
    pub fn from_document(doc: &Value) -> Self {
        let mut methods = Self::default();
        for (path, item) in doc.get("paths").and_then(Value::as_mapping).into_iter().flatten() {
            let (Some(path), Some(item)) = (path.as_str(), item.as_mapping()) else {
                continue;
            };
            let verbs: Vec<Method> = item
                .keys()
                .filter_map(Value::as_str)
                .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect();
            methods = methods.with(path, &verbs);
        }
        methods
    }

    /// Adds a route: `template` (`{name}` or `:name` for a segment) answers `methods`.
    pub fn with(mut self, template: &str, methods: &[Method]) -> Self {
        self.routes.push((segments(template), methods.to_vec()));
        self
    }

    /// The `Allow` value for `path`, as the router would pick its route (a literal segment
    /// before a parameter); `GET` implies `HEAD`, which the router answers. `None` when no
    /// route matches.
    pub fn allowed(&self, path: &str) -> Option<String> {
        let parts: Vec<&str> = path.split('/').collect();
        let (_, methods) = self
            .routes
            .iter()
            .filter(|(template, _)| {
                template.len() == parts.len()
                    && template.iter().zip(&parts).all(|(t, p)| match t {
                        Segment::Literal(l) => l == p,
                        Segment::Param => !p.is_empty(),
                    })
            })
            .max_by_key(|(template, _)| {
                template
                    .iter()
                    .map(|t| matches!(t, Segment::Literal(_)))
                    .collect::<Vec<_>>()
            })?;
        let mut names: Vec<&'static str> = Vec::new();
        for (method, name) in [
            (Method::GET, "GET"),
            (Method::HEAD, "HEAD"),
            (Method::POST, "POST"),
            (Method::PUT, "PUT"),
            (Method::PATCH, "PATCH"),
            (Method::DELETE, "DELETE"),
        ] {
            let served =
                methods.contains(&method) || (method == Method::HEAD && methods.contains(&Method::GET));
            if served {
                names.push(name);
            }
        }
        Some(names.join(", "))
    }
}

/// Adds `Allow` to the 405 answers of the endpoint it wraps.
pub struct AllowHeader(Arc<Methods>);

impl AllowHeader {
    /// A middleware answering from `methods`.
    pub fn new(methods: Methods) -> Self {
        Self(Arc::new(methods))
    }
}

impl<E: Endpoint> Middleware<E> for AllowHeader {
    type Output = AllowHeaderEndpoint<E>;

    fn transform(&self, inner: E) -> Self::Output {
        AllowHeaderEndpoint {
            inner,
            methods: self.0.clone(),
        }
    }
}

/// The endpoint [`AllowHeader`] wraps.
pub struct AllowHeaderEndpoint<E> {
    inner: E,
    methods: Arc<Methods>,
}

impl<E: Endpoint> Endpoint for AllowHeaderEndpoint<E> {
    type Output = Response;

    async fn call(&self, req: Request) -> Result<Response> {
        let path = req.uri().path().to_owned();
        let mut response = match self.inner.call(req).await {
            Ok(response) => response.into_response(),
            Err(err) if err.status() == StatusCode::METHOD_NOT_ALLOWED => err.into_response(),
            Err(err) => return Err(err),
        };
        if response.status() == StatusCode::METHOD_NOT_ALLOWED {
            if let Some(value) = self
                .methods
                .allowed(&path)
                .and_then(|v| HeaderValue::from_str(&v).ok())
            {
                response.headers_mut().insert(ALLOW, value);
            }
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_s_route_gives_the_methods() {
        let methods = Methods::default()
            .with("/api/v1/tenants", &[Method::POST, Method::GET])
            .with(
                "/api/v1/tenants/{tenant_id}",
                &[Method::GET, Method::PATCH, Method::DELETE],
            )
            .with("/api/v1/tenants/{tenant_id}/routes", &[Method::POST])
            .with("/api/v1/tenants/special", &[Method::PUT])
            .with("/media-stream/:token", &[Method::GET]);
        assert_eq!(methods.allowed("/api/v1/tenants").unwrap(), "GET, HEAD, POST");
        assert_eq!(
            methods.allowed("/api/v1/tenants/t1").unwrap(),
            "GET, HEAD, PATCH, DELETE"
        );
        assert_eq!(methods.allowed("/api/v1/tenants/t1/routes").unwrap(), "POST");
        assert_eq!(methods.allowed("/api/v1/tenants/special").unwrap(), "PUT");
        assert_eq!(methods.allowed("/media-stream/abc").unwrap(), "GET, HEAD");
        assert_eq!(methods.allowed("/api/v1/nothing"), None);
        assert_eq!(methods.allowed("/api/v1/tenants/"), None);
    }
}
