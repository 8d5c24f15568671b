//! The operations pack in `deploy/` names only metrics the service exports: every metric in the
//! alert rules' expressions and the dashboard's queries is in `/metrics` once the service has
//! answered a fallback call (its fallback series exist from then on) and a streamed one.
use std::collections::BTreeSet;

use stateset_voice::{backend_test, testkit::*};

#[path = "../../xtask/src/ops/queries.rs"]
#[allow(dead_code)]
mod queries;

fn pack_file(path: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

backend_test!(alert_rules_and_dashboard_name_only_exported_metrics);
async fn alert_rules_and_dashboard_name_only_exported_metrics(app: TestApp) {
    app.seed().await;
    app.set_draining(true).await;
    let fallback = app.incoming(&call_sid()).await.text().await.unwrap();
    assert!(!fallback.contains("<Stream"), "{fallback}");
    app.set_draining(false).await;
    let streamed = app.incoming(&call_sid()).await.text().await.unwrap();
    assert!(streamed.contains("<Stream"), "{streamed}");
    let exported = queries::exported_names(&app.metrics().await);

    let alerts = queries::alert_expressions(&pack_file("deploy/prometheus/alerts.yml")).unwrap();
    let alerts = queries::names_by_place(&alerts).unwrap();
    let panels = queries::dashboard_expressions(&pack_file("deploy/grafana/stateset-voice.json")).unwrap();
    let panels = queries::names_by_place(&panels).unwrap();
    assert_eq!(alerts.len(), 10, "every alert rule is read");
    assert!(panels.len() >= 10, "every dashboard query is read");
    for (what, names) in [("alert rules", &alerts), ("dashboard", &panels)] {
        let missing = queries::missing(names, &exported);
        assert!(
            missing.is_empty(),
            "the {what} name metrics the service does not export: {missing:?}"
        );
    }
    // The check can fail: a name the service does not export is reported.
    let made_up = vec![(
        "rule".to_owned(),
        BTreeSet::from(["voice_made_up_total".to_owned()]),
    )];
    assert_eq!(
        queries::missing(&made_up, &exported),
        [("rule", "voice_made_up_total")]
    );
    assert!(exported.contains("voice_fallbacks_total") && exported.contains("voice_database_available"));
}
