//! Every Kustomize layout under `deploy/` renders and passes strict schema validation,
//! components included (each over the base it names); and every rendered pod is hardened:
//! uid/gid 65532 and non-root, `RuntimeDefault` seccomp, a read-only root filesystem
//! (writes only on the state/buffer volume), no privilege escalation, all capabilities
//! dropped, no service-account token where the Kubernetes API is not used (the
//! aggregator), and a NetworkPolicy per role that admits each port only from whom it
//! serves.

use edgewatch_testkit::kustomize::{
    documents, layouts, of_kind, overlay, render_text, repo_root, strs, strs_at, validate_strict,
};
use serde_yaml_ng::Value;
use std::path::Path;

const WORKLOADS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// `deploy/components/<kind>/<role>` applies to `deploy/<role>`.
fn base_of(component: &str) -> String {
    let role = component.rsplit('/').next().expect("component path");
    format!("deploy/{role}")
}

/// Every kustomization, and every component over its base: (name, rendered text).
fn every_rendering(scratch: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for dir in layouts("Kustomization") {
        let text = render_text(&repo_root().join(&dir));
        out.push((dir, text));
    }
    for component in layouts("Component") {
        let dir = scratch.join(component.replace('/', "_"));
        std::fs::create_dir_all(&dir).expect("overlay directory");
        let text = render_text(&overlay(&dir, &base_of(&component), &[&component]));
        out.push((component, text));
    }
    out
}

#[test]
fn every_kustomization_and_component_renders_and_validates_strictly() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let renderings = every_rendering(scratch.path());
    let names: Vec<&str> = renderings.iter().map(|(n, _)| n.as_str()).collect();
    for expected in [
        "deploy/aggregator",
        "deploy/aggregator-sharded",
        "deploy/collector",
        "deploy/cert-manager-ca",
        "deploy/components/cert-manager/aggregator",
        "deploy/components/plain-secrets/collector",
        "deploy/components/bearer-tokens/aggregator",
        "deploy/components/alerting-keys/aggregator",
        "deploy/overlays/small-fleet",
        "deploy/overlays/sharded-core",
        "deploy/aggregator/rules",
        "deploy/prometheus-operator",
    ] {
        assert!(names.contains(&expected), "{expected} among {names:?}");
    }
    for (name, text) in &renderings {
        validate_strict(name, text, scratch.path());
    }
}

#[test]
fn every_rendered_pod_is_hardened() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut workloads = 0;
    for (name, text) in every_rendering(scratch.path()) {
        let docs = documents(&text);
        for kind in WORKLOADS {
            for w in of_kind(&docs, kind) {
                let what = format!("{name}: {kind} {}", w["metadata"]["name"].as_str().unwrap());
                let pod = &w["spec"]["template"]["spec"];
                assert_pod_hardened(&what, pod);
                assert_writes_only_on_data_volumes(&what, pod, &w["spec"]);
                assert_token_only_where_needed(&what, &docs, role(w), pod);
                assert_network_policy(&what, &docs, w);
                workloads += 1;
            }
        }
    }
    assert!(workloads >= 6, "{workloads} workloads checked");
}

fn assert_pod_hardened(what: &str, pod: &Value) {
    let sc = &pod["securityContext"];
    assert_eq!(
        sc["runAsNonRoot"].as_bool(),
        Some(true),
        "{what}: runAsNonRoot"
    );
    assert_eq!(sc["runAsUser"].as_u64(), Some(65532), "{what}: runAsUser");
    assert_eq!(sc["runAsGroup"].as_u64(), Some(65532), "{what}: runAsGroup");
    assert_eq!(
        sc["seccompProfile"]["type"].as_str(),
        Some("RuntimeDefault"),
        "{what}: seccompProfile"
    );
    let containers = pod["containers"].as_sequence().expect("containers");
    for c in containers {
        let name = c["name"].as_str().unwrap_or("?");
        let csc = &c["securityContext"];
        assert_container_locked(&format!("{what} container {name}"), csc);
        assert!(
            csc["capabilities"]["add"].is_null(),
            "{what} {name}: capabilities added"
        );
        for key in ["runAsUser", "runAsNonRoot", "privileged"] {
            assert!(
                csc[key].is_null(),
                "{what} {name}: {key} overrides the pod's"
            );
        }
    }
    // The one exception: the collector's init container that hands the buffer hostPath
    // (created by the kubelet as root) to uid 65532 — root with CHOWN and nothing else.
    for c in pod["initContainers"].as_sequence().into_iter().flatten() {
        let name = c["name"].as_str().unwrap_or("?");
        let csc = &c["securityContext"];
        assert_container_locked(&format!("{what} init container {name}"), csc);
        assert_eq!(
            strs(&csc["capabilities"]["add"]),
            vec!["CHOWN"],
            "{what} {name}"
        );
        assert_eq!(
            strs(&c["command"])[0],
            "chown",
            "{what} {name}: only chowns"
        );
        let mounts = c["volumeMounts"].as_sequence().expect("init mounts");
        assert_eq!(mounts.len(), 1, "{what} {name}: the buffer volume only");
        let volume = volume_named(pod, mounts[0]["name"].as_str().unwrap());
        assert!(
            volume["hostPath"].is_mapping(),
            "{what} {name}: the buffer hostPath"
        );
    }
}

fn assert_container_locked(what: &str, csc: &Value) {
    assert_eq!(
        csc["allowPrivilegeEscalation"].as_bool(),
        Some(false),
        "{what}: allowPrivilegeEscalation"
    );
    assert_eq!(
        csc["readOnlyRootFilesystem"].as_bool(),
        Some(true),
        "{what}: readOnlyRootFilesystem"
    );
    assert_eq!(
        strs(&csc["capabilities"]["drop"]),
        vec!["ALL"],
        "{what}: drop ALL"
    );
}

fn volume_named<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["volumes"]
        .as_sequence()
        .and_then(|vs| vs.iter().find(|v| v["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("volume {name}"))
}

/// Writable mounts are the state claim, the buffer hostPath (under /var/lib/edgewatch) or
/// a size-limited emptyDir (the git-sync sidecar's checkout and scratch space); config,
/// certificates and tokens are read-only.
fn assert_writes_only_on_data_volumes(what: &str, pod: &Value, spec: &Value) {
    let claims = strs_at(&spec["volumeClaimTemplates"], |t| &t["metadata"]["name"]);
    for c in pod["containers"].as_sequence().expect("containers") {
        for m in c["volumeMounts"].as_sequence().into_iter().flatten() {
            let name = m["name"].as_str().unwrap();
            if m["readOnly"].as_bool() == Some(true) {
                continue;
            }
            let scratch =
                !claims.contains(&name) && volume_named(pod, name)["emptyDir"].is_mapping();
            if scratch {
                assert!(
                    volume_named(pod, name)["emptyDir"]["sizeLimit"].is_string(),
                    "{what}: emptyDir {name} without a sizeLimit"
                );
                continue;
            }
            let data = claims.contains(&name) || {
                let v = volume_named(pod, name);
                v["persistentVolumeClaim"].is_mapping() || v["hostPath"].is_mapping()
            };
            assert!(data, "{what}: {name} is writable but holds no state");
            assert!(
                m["mountPath"]
                    .as_str()
                    .unwrap()
                    .starts_with("/var/lib/edgewatch"),
                "{what}: {name} mounted outside the state directory"
            );
        }
    }
}

/// edgewatch's own images are pinned by digest (the kustomizations' `images:` entries,
/// whose placeholder the user replaces); every other image names a version, never
/// `latest` or none.
#[test]
fn every_image_is_pinned() {
    let scratch = tempfile::tempdir().expect("tempdir");
    let mut edgewatch = 0;
    for (name, text) in every_rendering(scratch.path()) {
        let docs = documents(&text);
        for kind in WORKLOADS {
            for w in of_kind(&docs, kind) {
                let pod = &w["spec"]["template"]["spec"];
                let containers = ["containers", "initContainers"]
                    .iter()
                    .flat_map(|k| pod[*k].as_sequence().into_iter().flatten());
                for c in containers {
                    let image = c["image"].as_str().expect("image");
                    if image.starts_with("ghcr.io/edgewatch/") {
                        let digest = image.split_once("@sha256:").map(|(_, d)| d);
                        assert!(
                            digest.is_some_and(|d| d.len() == 64),
                            "{name}: {image} is not pinned by digest"
                        );
                        edgewatch += 1;
                    } else {
                        let tag = image.rsplit_once(':').map(|(_, t)| t);
                        assert!(
                            tag.is_some_and(|t| t != "latest" && !t.contains('/')),
                            "{name}: {image} names no version"
                        );
                    }
                }
            }
        }
    }
    assert!(edgewatch >= 6, "{edgewatch} edgewatch containers checked");
}

/// The collector watches pods (discovery): its token stays, bound to a ServiceAccount
/// with a ClusterRoleBinding; nothing else gets one.
fn assert_token_only_where_needed(what: &str, docs: &[Value], role: &str, pod: &Value) {
    let automount = pod["automountServiceAccountToken"].as_bool();
    if role == "collector" {
        assert_eq!(automount, Some(true), "{what}: discovery needs the token");
        let sa = pod["serviceAccountName"].as_str().expect("service account");
        let bound = of_kind(docs, "ClusterRoleBinding")
            .iter()
            .any(|b| b["subjects"][0]["name"].as_str() == Some(sa));
        assert!(bound, "{what}: {sa} is bound");
    } else {
        assert_eq!(automount, Some(false), "{what}: no service-account token");
    }
}

/// `app.kubernetes.io/component` of the workload's pods.
fn role(workload: &Value) -> &str {
    workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .expect("component label")
}

/// A NetworkPolicy selects the pods, restricts both directions, admits every port the
/// pod serves (the admin/HTTP port only from the monitoring namespace) and allows DNS.
fn assert_network_policy(what: &str, docs: &[Value], workload: &Value) {
    let labels = workload["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .expect("pod labels");
    let selects = |np: &&&Value| {
        np["spec"]["podSelector"]["matchLabels"]
            .as_mapping()
            .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))
    };
    let policies = of_kind(docs, "NetworkPolicy");
    let np = policies
        .iter()
        .find(selects)
        .unwrap_or_else(|| panic!("{what}: no NetworkPolicy selects its pods"));
    let spec = &np["spec"];
    assert_eq!(
        strs(&spec["policyTypes"]),
        vec!["Ingress", "Egress"],
        "{what}"
    );
    let container = &workload["spec"]["template"]["spec"]["containers"][0];
    for port in container["ports"].as_sequence().expect("ports") {
        let number = port["containerPort"].as_u64().unwrap();
        let rules: Vec<&Value> = rules_for_port(&spec["ingress"], number);
        assert!(
            !rules.is_empty(),
            "{what}: port {number} admitted by no ingress rule"
        );
        if matches!(port["name"].as_str(), Some("admin" | "http")) {
            for rule in rules {
                for peer in rule["from"].as_sequence().expect("from") {
                    assert_eq!(
                        peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                            .as_str(),
                        Some("monitoring"),
                        "{what}: port {number} only from the monitoring namespace"
                    );
                }
            }
        }
    }
    assert!(
        !rules_for_port(&spec["egress"], 53).is_empty(),
        "{what}: egress to DNS"
    );
    if role(workload) == "collector" {
        assert!(
            !rules_for_port(&spec["egress"], 14317).is_empty(),
            "{what}: egress to the aggregator's OTLP port"
        );
        assert!(
            !rules_for_port(&spec["egress"], 443).is_empty(),
            "{what}: egress to the API server"
        );
    }
}

/// The rules of an ingress or egress list that name `port`.
fn rules_for_port(rules: &Value, port: u64) -> Vec<&Value> {
    rules
        .as_sequence()
        .into_iter()
        .flatten()
        .filter(|r| {
            r["ports"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|p| p["port"].as_u64() == Some(port))
        })
        .collect()
}
