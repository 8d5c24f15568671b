//! stateset-voice: answers Twilio Voice webhooks for many tenants.
//!
//! [`app`] builds the HTTP endpoint used by the server, the tests and the conformance suite;
//! [`server::serve`] runs it with the background tasks.
pub mod api;
pub mod call;
pub mod cli;
pub mod config;
pub mod db;
pub mod demo;
pub mod domain;
pub mod error;
pub mod logging;
pub mod media;
pub mod metrics;
pub mod net;
pub mod secrets;
pub mod server;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod twilio;
pub mod worker;

use poem::{http::Method, Endpoint, EndpointExt, IntoResponse, Route};

use crate::{config::Config, domain::secrets_at_rest::AtStart, state::AppState};

/// The whole HTTP surface: the API, its published spec and docs.
pub fn app(state: AppState) -> impl Endpoint {
    let api = api::service(state.clone());
    let spec = api::spec::Document::new(&api);
    let (spec_json, spec_yaml) = (spec.json(), spec.yaml());
    let docs = api.swagger_ui();
    let allow = api::allow::Methods::from_document(spec.value())
        .with("/media-stream", &[Method::GET])
        .with("/media-stream/:token", &[Method::GET]);
    Route::new()
        .nest("/", api)
        .at(
            "/openapi.json",
            poem::endpoint::make_sync(move |_| spec_json.clone().with_content_type("application/json")),
        )
        .at(
            "/openapi.yaml",
            poem::endpoint::make_sync(move |_| {
                spec_yaml
                    .clone()
                    .with_content_type("application/x-yaml")
                    .with_header("Content-Disposition", "inline; filename=\"spec.yaml\"")
            }),
        )
        .at("/media-stream", poem::get(api::media::media_stream))
        .at("/media-stream/:token", poem::get(api::media::media_stream_path))
        .nest("/docs", docs)
        .data(state.clone())
        .before(api::reject_nul_in_url)
        .catch_all_error(error::problem_for)
        .with(api::allow::AllowHeader::new(allow))
        .around(move |endpoint, req| {
            let metrics = state.metrics.clone();
            async move {
                let started = std::time::Instant::now();
                let method = req.method().to_string();
                let path = req.uri().path().to_owned();
                let response = endpoint.call(req).await?;
                metrics.observe_http(&method, &path, response.status().as_u16(), started.elapsed());
                Ok(response)
            }
        })
        .with(api::request_span::RequestSpan)
}

/// The published OpenAPI document, as committed in `openapi.yaml`.
pub fn openapi_yaml() -> String {
    // The spec depends on code only; a throwaway state with no database is enough.
    let db = sea_orm::DatabaseConnection::Disconnected.into();
    let config = Config::from_args(config::ConfigArgs::defaults()).expect("default config is valid");
    api::spec::Document::new(&api::service(AppState::new(db, config))).yaml()
}

/// Connects to the database, applies migrations and checks the stored tenant secrets against
/// the configured keys, encrypting those still in clear when there is a key
/// ([`domain::secrets_at_rest::at_start`]).
pub async fn prepare(config: Config) -> Result<(AppState, AtStart), domain::Error> {
    let db = db::connect(&config).await?;
    db::migrate(&db).await?;
    let at_start = domain::secrets_at_rest::at_start(&db, &config.secrets).await?;
    Ok((AppState::new(db, config), at_start))
}
