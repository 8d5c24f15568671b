//! The queries of the operations pack and the metric names they select: the `expr` of each
//! alert rule and of each dashboard query, the names a PromQL expression selects (from
//! promql-parser's syntax tree), and the names a Prometheus text exposition holds. Free of the
//! rest of xtask, so that the service's tests use the same code (`tests/api/ops_pack.rs`
//! includes this file).
use std::collections::BTreeSet;

use serde_json::Value;

use promql_parser::{
    label::MatchOp,
    parser::{self, Expr, VectorSelector},
    util::{walk_expr, ExprVisitor},
};

/// Grafana's interval variables, which stand where PromQL has a duration.
const GRAFANA_INTERVALS: [&str; 6] = [
    "${__rate_interval}",
    "$__rate_interval",
    "${__interval}",
    "$__interval",
    "${__range}",
    "$__range",
];

/// A Grafana panel's query as PromQL: its interval variables become `5m`. Variables inside
/// label matchers (`job=~"$job"`) are strings already.
pub fn from_grafana(expr: &str) -> String {
    GRAFANA_INTERVALS
        .iter()
        .fold(expr.to_owned(), |e, var| e.replace(var, "5m"))
}

/// Every metric name `expr` selects: `name{...}`, `name[5m]` or a bare `name`, and
/// `{__name__="name"}`. Function names, label names and keywords are not metric names.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    struct Names(BTreeSet<String>);
    impl Names {
        fn add(&mut self, selector: &VectorSelector) {
            self.0.extend(selector.name.clone());
            let by_matcher = selector
                .matchers
                .matchers
                .iter()
                .filter(|m| m.name == "__name__" && matches!(m.op, MatchOp::Equal))
                .map(|m| m.value.clone());
            self.0.extend(by_matcher);
        }
    }
    impl ExprVisitor for Names {
        type Error = String;
        fn pre_visit(&mut self, expr: &Expr) -> Result<bool, String> {
            match expr {
                Expr::VectorSelector(selector) => self.add(selector),
                Expr::MatrixSelector(matrix) => self.add(&matrix.vs),
                _ => {}
            }
            Ok(true)
        }
    }
    let ast = parser::parse(expr).map_err(|e| format!("{expr:?} is not PromQL: {e}"))?;
    let mut names = Names(BTreeSet::new());
    walk_expr(&mut names, &ast)?;
    Ok(names.0)
}

/// The names of the samples in a Prometheus text exposition: counters with `_total`, each
/// histogram as `_bucket`, `_sum` and `_count`, as PromQL selects them.
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names in `wanted` that `exported` lacks, each with where it is used.
pub fn missing<'a>(
    wanted: &'a [(String, BTreeSet<String>)],
    exported: &BTreeSet<String>,
) -> Vec<(&'a str, &'a str)> {
    wanted
        .iter()
        .flat_map(|(place, names)| names.iter().map(move |n| (place.as_str(), n.as_str())))
        .filter(|(_, name)| !exported.contains(*name))
        .collect()
}

/// The `expr` of every alert rule, by alert name.
pub fn alert_expressions(rules_yaml: &str) -> Result<Vec<(String, String)>, String> {
    let doc: serde_yaml::Value = serde_yaml::from_str(rules_yaml).map_err(|e| format!("alert rules: {e}"))?;
    let mut out = Vec::new();
    for group in doc["groups"].as_sequence().into_iter().flatten() {
        for rule in group["rules"].as_sequence().into_iter().flatten() {
            let name = rule["alert"].as_str().or(rule["record"].as_str());
            match (name, rule["expr"].as_str()) {
                (Some(name), Some(expr)) => out.push((name.to_owned(), expr.to_owned())),
                _ => return Err(format!("alert rules: a rule without a name or an expr: {rule:?}")),
            }
        }
    }
    Ok(out)
}

/// The PromQL of every dashboard query (panel targets and `label_values` variables), by where it
/// is used.
pub fn dashboard_expressions(dashboard_json: &str) -> Result<Vec<(String, String)>, String> {
    let doc: Value = serde_json::from_str(dashboard_json).map_err(|e| format!("dashboard: {e}"))?;
    let mut out = Vec::new();
    for panel in doc["panels"].as_array().into_iter().flatten() {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .ok_or_else(|| format!("dashboard: panel {title:?} has a target without expr"))?;
            out.push((format!("panel {title:?}"), from_grafana(expr)));
        }
    }
    for variable in doc["templating"]["list"].as_array().into_iter().flatten() {
        if variable["type"] != "query" {
            continue;
        }
        let query = variable["query"]["query"]
            .as_str()
            .or(variable["query"].as_str())
            .unwrap_or_default();
        // label_values(METRIC, LABEL): the metric is a selector.
        let selector = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.rsplit_once(','))
            .map(|(selector, _)| selector.trim());
        match selector {
            Some(selector) => out.push((
                format!("variable {:?}", variable["name"].as_str().unwrap_or("?")),
                selector.to_owned(),
            )),
            None => {
                return Err(format!(
                    "dashboard: variable query {query:?} is not label_values(METRIC, LABEL)"
                ))
            }
        }
    }
    Ok(out)
}

/// The metric names each expression selects.
pub fn names_by_place(exprs: &[(String, String)]) -> Result<Vec<(String, BTreeSet<String>)>, String> {
    exprs
        .iter()
        .map(|(place, expr)| {
            let names = metric_names(expr).map_err(|e| format!("{place}: {e}"))?;
            if names.is_empty() {
                return Err(format!("{place}: {expr:?} names no metric"));
            }
            Ok((place.clone(), names))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(expr: &str) -> Vec<String> {
        metric_names(expr).unwrap().into_iter().collect()
    }

    #[test]
    fn selected_metrics_only() {
        assert_eq!(
            names(
                r#"sum by (job, outcome) (rate(voice_calls_total{outcome="fallback", job=~"a|b"}[10m])) / ignoring(outcome) group_left sum(rate(voice_calls_total[10m])) > bool 0.2"#
            ),
            ["voice_calls_total"]
        );
        assert_eq!(
            names("histogram_quantile(0.99, sum by (le) (rate(voice_http_request_duration_seconds_bucket[5m]))) and on(instance) voice_up offset 1h"),
            ["voice_http_request_duration_seconds_bucket", "voice_up"]
        );
        assert_eq!(
            names(r#"{__name__="voice_spool_depth", job="x"} > 0"#),
            ["voice_spool_depth"]
        );
        assert_eq!(
            names("max(deriv(voice_outbox_backlog[15m:1m]))"),
            ["voice_outbox_backlog"]
        );
        assert_eq!(names("vector(1) + time()"), Vec::<String>::new());
        assert!(metric_names("sum(rate(x[5m])").is_err(), "unbalanced");
    }

    #[test]
    fn grafana_intervals_become_durations() {
        let expr = from_grafana(r#"rate(voice_calls_total{job=~"$job"}[$__rate_interval])"#);
        assert_eq!(expr, r#"rate(voice_calls_total{job=~"$job"}[5m])"#);
        assert_eq!(names(&expr), ["voice_calls_total"]);
    }

    #[test]
    fn exposition_names_are_sample_names() {
        let text = "# HELP voice_calls Calls.\n# TYPE voice_calls counter\n\
                    voice_calls_total{outcome=\"streamed\"} 0\nvoice_spool_depth 0\n\
                    voice_h_bucket{le=\"1.0\"} 0\nvoice_h_sum 0.0\nvoice_h_count 0\n# EOF\n";
        let exported = exported_names(text);
        assert_eq!(
            exported.iter().map(String::as_str).collect::<Vec<_>>(),
            [
                "voice_calls_total",
                "voice_h_bucket",
                "voice_h_count",
                "voice_h_sum",
                "voice_spool_depth"
            ]
        );
        let wanted = vec![(
            "rule A".to_owned(),
            ["voice_calls_total", "voice_calls", "voice_h"]
                .map(str::to_owned)
                .into(),
        )];
        assert_eq!(
            missing(&wanted, &exported),
            [("rule A", "voice_calls"), ("rule A", "voice_h")]
        );
    }
}
