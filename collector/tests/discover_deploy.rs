//! `deploy/collector` renders with `kubectl kustomize`: a DaemonSet with the downward API
//! node name, buffer hostPath, edge tolerations, probes and resources; RBAC that can only
//! get/list/watch pods; a ConfigMap whose collector YAML is a valid config.

use serde::Deserialize;
use serde_yaml_ng::Value;
use std::path::Path;
use std::process::Command;

fn render(dir: &str) -> Vec<Value> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(root.join(dir))
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("utf-8");
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).expect("yaml document"))
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

#[test]
fn collector_kustomization_renders() {
    let docs = render("deploy/collector");
    let ds = of_kind(&docs, "DaemonSet");
    assert_eq!(ds.len(), 1);
    let pod = &ds[0]["spec"]["template"]["spec"];
    let sa = pod["serviceAccountName"].as_str().expect("service account");
    let c = &pod["containers"][0];
    let env = c["env"].as_sequence().expect("env");
    assert!(env.iter().any(|e| e["name"].as_str() == Some("NODE_NAME")
        && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("spec.nodeName")));
    assert_eq!(c["resources"]["requests"]["cpu"].as_str(), Some("50m"));
    assert_eq!(c["resources"]["requests"]["memory"].as_str(), Some("64Mi"));
    assert_eq!(c["resources"]["limits"]["cpu"].as_str(), Some("500m"));
    assert_eq!(c["resources"]["limits"]["memory"].as_str(), Some("256Mi"));
    assert_eq!(
        c["livenessProbe"]["httpGet"]["path"].as_str(),
        Some("/healthz")
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    let tolerations = pod["tolerations"].as_sequence().expect("tolerations");
    for effect in ["NoSchedule", "NoExecute"] {
        assert!(tolerations.iter().any(|t| t["key"].as_str()
            == Some("node-role.kubernetes.io/edge")
            && t["operator"].as_str() == Some("Exists")
            && t["effect"].as_str() == Some(effect)));
    }
    let volumes = pod["volumes"].as_sequence().expect("volumes");
    assert!(
        volumes
            .iter()
            .any(|v| v["hostPath"]["path"].as_str().is_some()),
        "buffer on a hostPath"
    );

    // RBAC: one ClusterRole, pods get/list/watch, nothing else; bound to the DaemonSet's SA.
    let roles = of_kind(&docs, "ClusterRole");
    assert_eq!(roles.len(), 1);
    let rules = roles[0]["rules"].as_sequence().expect("rules");
    assert_eq!(rules.len(), 1);
    assert_eq!(strs(&rules[0]["apiGroups"]), vec![""]);
    assert_eq!(strs(&rules[0]["resources"]), vec!["pods"]);
    assert_eq!(strs(&rules[0]["verbs"]), vec!["get", "list", "watch"]);
    assert!(of_kind(&docs, "Role").is_empty());
    let binding = of_kind(&docs, "ClusterRoleBinding");
    assert_eq!(binding.len(), 1);
    assert_eq!(binding[0]["roleRef"]["name"], roles[0]["metadata"]["name"]);
    assert_eq!(binding[0]["subjects"][0]["name"].as_str(), Some(sa));
    assert_eq!(of_kind(&docs, "ServiceAccount").len(), 1);

    // The ConfigMap's collector YAML is a valid config with discovery on.
    let cm = of_kind(&docs, "ConfigMap");
    let yaml = cm[0]["data"]["collector.yaml"]
        .as_str()
        .expect("collector.yaml in the ConfigMap");
    let cfg: edgewatch_config::CollectorConfig =
        edgewatch_config::parse(yaml, "collector.yaml").expect("valid collector config");
    assert!(cfg.discovery.kubernetes);
    let mounted = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|v| v["configMap"]["name"] == cm[0]["metadata"]["name"]);
    assert!(mounted, "the generated ConfigMap (hashed name) is mounted");
}

#[test]
fn aggregator_kustomization_renders() {
    let docs = render("deploy/aggregator");
    assert_eq!(of_kind(&docs, "Deployment").len(), 1);
    assert_eq!(of_kind(&docs, "Service").len(), 1);
    assert_eq!(of_kind(&docs, "PersistentVolumeClaim").len(), 1);
    let cm = of_kind(&docs, "ConfigMap");
    let yaml = cm[0]["data"]["aggregator.yaml"]
        .as_str()
        .expect("aggregator.yaml");
    let _: edgewatch_config::AggregatorConfig =
        edgewatch_config::parse(yaml, "aggregator.yaml").expect("valid aggregator config");
}
