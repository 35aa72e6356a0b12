//! The Grafana dashboards are valid JSON and every panel query is valid PromQL.

use std::path::Path;

#[test]
fn every_dashboard_query_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboards");
    let mut queries = 0;
    for entry in std::fs::read_dir(&dir).expect("dashboards/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let d: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            d["uid"].is_string() && d["title"].is_string(),
            "{}",
            path.display()
        );
        for panel in d["panels"].as_array().expect("panels") {
            for target in panel["targets"].as_array().expect("targets") {
                let expr = target["expr"].as_str().expect("expr");
                // Grafana substitutes template variables before querying.
                let expr = expr.replace("$cluster", ".*");
                promql_parser::parser::parse(&expr).unwrap_or_else(|e| {
                    panic!("{} panel {:?}: {expr}: {e}", path.display(), panel["title"])
                });
                queries += 1;
            }
        }
    }
    assert!(queries >= 10, "found {queries} queries");
}
