//! The API docs portal: the published documents (OpenAPI with the events as `webhooks`,
//! AsyncAPI for the streaming side) and the HTML pages rendered from them. The service serves
//! the portal at `/docs` and `stateset-voice docs DIR` writes the same files, so the served and
//! the static portal cannot differ.
pub mod asyncapi;
pub mod openapi;
pub mod pages;

use std::{path::Path, sync::Arc};

use poem::{
    endpoint::make_sync,
    http::{header, StatusCode},
    Endpoint, EndpointExt, Response, Route,
};

use crate::{api, config, state::AppState};

/// One file of the portal.
#[derive(Debug, Clone)]
pub struct File {
    /// Its name, relative to the portal's root.
    pub name: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

/// Every file of the portal, built once from the code.
#[derive(Debug, Clone)]
pub struct Portal {
    files: Vec<File>,
}

impl Portal {
    /// The portal of `service` (its spec depends on code only).
    pub fn new(service: &api::Service) -> Self {
        Self::from_document(openapi::document(service))
    }

    /// The portal of a published OpenAPI document ([`openapi::document`]).
    pub fn from_document(openapi: serde_yaml::Value) -> Self {
        let asyncapi = asyncapi::document();
        let openapi_json: serde_json::Value =
            serde_json::to_value(&openapi).expect("the OpenAPI document is JSON");
        let mut files: Vec<File> = pages::render(&openapi_json, &asyncapi)
            .into_iter()
            .map(|(name, body)| File {
                name,
                content_type: "text/html; charset=utf-8",
                body,
            })
            .collect();
        files.push(File {
            name: "openapi.yaml",
            content_type: "application/yaml",
            body: serde_yaml::to_string(&openapi).expect("the OpenAPI document serialises"),
        });
        files.push(File {
            name: "openapi.json",
            content_type: "application/json",
            body: serde_json::to_string_pretty(&openapi_json).expect("the OpenAPI document serialises"),
        });
        files.push(File {
            name: "asyncapi.yaml",
            content_type: "application/yaml",
            body: serde_yaml::to_string(&asyncapi).expect("the AsyncAPI document serialises"),
        });
        Self { files }
    }

    /// The portal built from the code alone, with no database.
    pub fn from_code() -> Self {
        Self::new(&spec_service())
    }

    /// The portal's files.
    pub fn files(&self) -> &[File] {
        &self.files
    }

    /// The file named `name`.
    pub fn file(&self, name: &str) -> Option<&File> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Serves one file at an endpoint (`/openapi.yaml`, `/asyncapi.yaml`, ...).
    pub fn serve_file(self: &Arc<Self>, name: &'static str) -> impl Endpoint + 'static {
        let portal = Arc::clone(self);
        make_sync(move |_| portal.respond(name))
    }

    /// Serves the whole portal under a prefix: its index at `/` and each file by name.
    pub fn endpoint(self: &Arc<Self>) -> impl Endpoint + 'static {
        let index = Arc::clone(self);
        let files = Arc::clone(self);
        Route::new()
            .at(
                "/",
                make_sync(move |req| {
                    // Relative links need the trailing slash: `/docs` → `/docs/`.
                    let path = req.original_uri().path();
                    match path.rsplit('/').next() {
                        Some(last) if !last.is_empty() => Response::builder()
                            .status(StatusCode::PERMANENT_REDIRECT)
                            .header(header::LOCATION, format!("{last}/"))
                            .finish(),
                        _ => index.respond("index.html"),
                    }
                }),
            )
            .at(
                "/:file",
                make_sync(move |req| {
                    let name = req.path_params::<String>().unwrap_or_default();
                    files.respond(&name)
                }),
            )
            .map_to_response()
    }

    fn respond(&self, name: &str) -> Response {
        match self.file(name) {
            Some(file) => Response::builder()
                .content_type(file.content_type)
                .header(header::CACHE_CONTROL, "no-cache")
                .body(file.body.clone()),
            None => Response::builder()
                .status(StatusCode::NOT_FOUND)
                .content_type("text/plain; charset=utf-8")
                .body(format!("no page {name:?} in the docs portal")),
        }
    }

    /// Writes every file into `dir` (created if missing).
    pub fn write_to(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for file in &self.files {
            std::fs::write(dir.join(file.name), &file.body)?;
        }
        Ok(())
    }
}

/// The API service with a throwaway state: what the published documents are made from.
pub fn spec_service() -> api::Service {
    let db = sea_orm::DatabaseConnection::Disconnected.into();
    let config = config::Config::from_args(config::ConfigArgs::defaults()).expect("default config is valid");
    api::service(AppState::new(db, config))
}
