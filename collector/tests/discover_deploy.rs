//! `deploy/collector` renders with `kubectl kustomize`: a DaemonSet with the downward API
//! node name, buffer hostPath, edge tolerations, probes and resources; RBAC that can only
//! get/list/watch pods; a ConfigMap whose collector YAML is a valid config. And the
//! N-aggregator layout `deploy/aggregator-sharded`: a StatefulSet whose replicas each
//! read their own valid config, own disjoint clusters, and are what the collectors of
//! those clusters (the per-cluster overlays) point at.

use edgewatch_testkit::kustomize::{generated, of_kind, render, strs, strs_at};
use edgewatch_testkit::trust_keys::without_trust_keys;
use serde_yaml_ng::Value;
use std::path::Path;

/// The config in `yaml`, parsed by the config crate without the keys of issue #13's
/// Interface (deploy_trust.rs checks those).
fn parse_without_trust_keys<T: serde::de::DeserializeOwned>(yaml: &str, file: &str) -> T {
    let rest = without_trust_keys(yaml);
    edgewatch_config::parse(&rest, file).unwrap_or_else(|e| panic!("{file}: {e}"))
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
    assert_eq!(c["resources"]["requests"]["cpu"].as_str(), Some("75m"));
    assert_eq!(c["resources"]["requests"]["memory"].as_str(), Some("32Mi"));
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
    let cfg: edgewatch_config::CollectorConfig = parse_without_trust_keys(yaml, "collector.yaml");
    assert!(cfg.discovery.kubernetes);
    // Projected with the TLS Secret into one volume (deploy_security.rs).
    let mounted = pod["volumes"].as_sequence().unwrap().iter().any(|v| {
        strs_at(&v["projected"]["sources"], |s| &s["configMap"]["name"])
            .contains(&cm[0]["metadata"]["name"].as_str().unwrap())
    });
    assert!(mounted, "the generated ConfigMap (hashed name) is mounted");
}

#[test]
fn aggregator_kustomization_renders() {
    let docs = render("deploy/aggregator");
    assert_eq!(of_kind(&docs, "Deployment").len(), 1);
    assert_eq!(of_kind(&docs, "Service").len(), 1);
    assert_eq!(of_kind(&docs, "PersistentVolumeClaim").len(), 1);
    assert_eq!(of_kind(&docs, "PodDisruptionBudget").len(), 1);
    // Valid with its rule files and alerting keys: tests/deploy_validate.rs runs
    // `edgewatch validate` on it as the pod loads it.
    assert!(config_map_data(&docs)["aggregator.yaml"].is_string());
}

/// The data of the config ConfigMap in `docs` (edgewatch-aggregator or
/// edgewatch-collector, whichever was rendered; not the rule files').
fn config_map_data(docs: &[Value]) -> &serde_yaml_ng::Mapping {
    let name = if of_kind(docs, "DaemonSet").is_empty() {
        "edgewatch-aggregator"
    } else {
        "edgewatch-collector"
    };
    generated(docs, "ConfigMap", name)["data"]
        .as_mapping()
        .expect("ConfigMap data")
}

#[test]
fn sharded_aggregators_render_and_the_cluster_mapping_is_consistent() {
    let docs = render("deploy/aggregator-sharded");
    let sts = of_kind(&docs, "StatefulSet");
    assert_eq!(sts.len(), 1);
    let spec = &sts[0]["spec"];
    let name = sts[0]["metadata"]["name"].as_str().unwrap();
    let replicas = spec["replicas"].as_u64().expect("replicas") as usize;
    assert!(replicas >= 2);

    // The headless Service is the StatefulSet's serviceName; one Service per replica.
    let services = of_kind(&docs, "Service");
    let headless = services
        .iter()
        .find(|s| s["spec"]["clusterIP"].as_str() == Some("None"))
        .expect("a headless Service");
    assert_eq!(headless["metadata"]["name"], spec["serviceName"]);
    for i in 0..replicas {
        let pod = format!("{name}-{i}");
        let svc = services
            .iter()
            .find(|s| s["metadata"]["name"].as_str() == Some(pod.as_str()))
            .unwrap_or_else(|| panic!("a Service for {pod}"));
        assert_eq!(
            svc["spec"]["selector"]["statefulset.kubernetes.io/pod-name"].as_str(),
            Some(pod.as_str())
        );
    }

    // State and WAL on a per-replica volume; each pod reads the config named after it.
    let pod = &spec["template"]["spec"];
    let c = &pod["containers"][0];
    let claim = spec["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volume claim template");
    let mounts = c["volumeMounts"].as_sequence().expect("mounts");
    let state = mounts
        .iter()
        .find(|m| m["name"].as_str() == Some(claim))
        .expect("the claim is mounted")["mountPath"]
        .as_str()
        .unwrap();
    assert!(strs(&c["args"]).contains(&"/etc/edgewatch/$(POD_NAME).yaml"));
    let env = c["env"].as_sequence().expect("env");
    assert!(env.iter().any(|e| e["name"].as_str() == Some("POD_NAME")
        && e["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("metadata.name")));

    // One valid config per replica: disjoint fleet.clusters, the same TSDB, several
    // Alertmanagers, state and WAL on the claim.
    let data = config_map_data(&docs);
    let mut owner = std::collections::BTreeMap::new();
    let mut tsdb = std::collections::BTreeSet::new();
    for i in 0..replicas {
        let pod = format!("{name}-{i}");
        let file = format!("{pod}.yaml");
        let yaml = data[file.as_str()]
            .as_str()
            .unwrap_or_else(|| panic!("{file} in the ConfigMap"));
        let cfg: edgewatch_config::AggregatorConfig = parse_without_trust_keys(yaml, &file);
        assert!(!cfg.fleet.clusters.is_empty(), "{file}: fleet.clusters");
        for cluster in &cfg.fleet.clusters {
            let before = owner.insert(cluster.clone(), pod.clone());
            assert!(before.is_none(), "{cluster} owned twice");
        }
        let urls: Vec<String> = cfg.remote_write.iter().map(|r| r.url.0.clone()).collect();
        assert!(!urls.is_empty(), "{file}: remote_write");
        tsdb.insert(urls);
        let alerting = cfg.alerting.as_ref().expect("alerting");
        let ams: usize = alerting
            .receivers
            .iter()
            .map(|r| r.alertmanager_configs.len())
            .sum();
        assert!(ams >= 2, "{file}: every Alertmanager of the cluster");
        assert!(
            cfg.state.path.starts_with(state),
            "{file}: state on the claim"
        );
        assert!(
            cfg.wal_path().starts_with(state),
            "{file}: WAL on the claim"
        );
    }
    assert_eq!(tsdb.len(), 1, "every replica writes to the same TSDB");

    // Each cluster overlay: its collectors carry its name and point at the replica
    // that owns it.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aggregator-sharded/clusters");
    let mut overlays = 0;
    for dir in std::fs::read_dir(&root).expect("clusters/") {
        let cluster = dir.unwrap().file_name().into_string().unwrap();
        let docs = render(format!("deploy/aggregator-sharded/clusters/{cluster}"));
        assert_eq!(
            of_kind(&docs, "ConfigMap").len(),
            1,
            "{cluster}: replaced, not added"
        );
        let yaml = config_map_data(&docs)["collector.yaml"].as_str().unwrap();
        let cfg: edgewatch_config::CollectorConfig =
            parse_without_trust_keys(yaml, "collector.yaml");
        assert_eq!(cfg.cluster.0, cluster);
        let pod = owner
            .get(&cluster)
            .unwrap_or_else(|| panic!("no replica owns {cluster}"));
        let uri: http::Uri = cfg.forward.endpoint.0.parse().expect("forward.endpoint");
        let host = uri.host().unwrap_or_default();
        assert!(
            host.starts_with(&format!("{pod}.")),
            "{cluster} → {host}, owned by {pod}"
        );
        overlays += 1;
    }
    assert_eq!(overlays, owner.len(), "an overlay per owned cluster");
}
