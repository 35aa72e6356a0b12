//! Pod discovery and model metadata: table tests of the pure extraction, and the
//! watcher against kube's `tower-test` mock API server with realistic pods (an ai-edge
//! OVMS pod pinned by digest, a KServe predictor, a Triton pod), including a rollout.

use edgewatch_collector::discover::extract::{
    deployment_of, image_tag, normalize_digest, parse_digest, pod_info, scrape_targets,
};
use edgewatch_collector::discover::{self, enrich_models, Rules, Snapshot};
use edgewatch_collector::model;
use http::{Request, Response};
use k8s_openapi::api::core::v1::Pod;
use kube::client::Body;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point, ResourceMetrics};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const NODE: &str = "edge-node-1";
const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// ai-edge: Deployment `model-1`, labels `app`, `model-name`, image pinned by digest,
/// OVMS inside the model image (started with `--rest_port`).
#[allow(clippy::too_many_arguments)]
fn ovms_pod(
    name: &str,
    hash: &str,
    uid: &str,
    tag: &str,
    digest: &str,
    ready: bool,
    terminating: bool,
    ip: &str,
) -> Value {
    let mut p = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "namespace": "tensorflow-housing-app", "uid": uid, "resourceVersion": "10",
            "labels": {"app": "tensorflow-housing-app", "model-name": "tensorflow-housing", "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("model-1-{hash}"), "uid": "rs-1", "controller": true}]
        },
        "spec": {
            "nodeName": NODE,
            "containers": [{
                "name": "model",
                "image": format!("quay.io/rhoai-edge/tensorflow-housing:{tag}@{digest}"),
                "args": ["--model_name=tensorflow-housing", "--model_path=/models/tensorflow-housing", "--port=8081", "--rest_port=8080", "--metrics_enable"],
                "ports": [{"containerPort": 8080, "name": "http", "protocol": "TCP"}],
                "readinessProbe": {"httpGet": {"path": "/v2/models/tensorflow-housing/ready", "port": 8080}}
            }]
        },
        "status": {
            "phase": "Running", "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
            "containerStatuses": [{
                "name": "model", "ready": ready, "restartCount": 1,
                "image": format!("quay.io/rhoai-edge/tensorflow-housing:{tag}"),
                "imageID": format!("quay.io/rhoai-edge/tensorflow-housing@{digest}")
            }]
        }
    });
    if terminating {
        p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
    }
    p
}

fn kserve_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "sklearn-iris-predictor-00001-deployment-5d8f7c9b4f-abcde", "namespace": "kserve-test", "uid": "uid-kserve",
            "labels": {"serving.kserve.io/inferenceservice": "sklearn-iris", "component": "predictor", "pod-template-hash": "5d8f7c9b4f"},
            "annotations": {"prometheus.kserve.io/port": "8080", "prometheus.kserve.io/path": "/metrics"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "sklearn-iris-predictor-00001-deployment-5d8f7c9b4f", "uid": "rs-2", "controller": true}]
        },
        "spec": {"nodeName": NODE, "containers": [
            {"name": "kserve-container", "image": "kserve/sklearnserver:v0.13.0", "ports": [{"containerPort": 8080, "name": "user-port"}]},
            {"name": "queue-proxy", "image": "gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"}
        ]},
        "status": {"phase": "Running", "podIP": "10.42.0.21",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [
                {"name": "kserve-container", "ready": true, "restartCount": 0, "image": "docker.io/kserve/sklearnserver:v0.13.0",
                 "imageID": "docker.io/kserve/sklearnserver@sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"},
                {"name": "queue-proxy", "ready": true, "restartCount": 0, "image": "x", "imageID": "x"}
            ]}
    })
}

fn triton_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "densenet-6c9d4b7f8-k9z7m", "namespace": "vision", "uid": "uid-triton",
            "labels": {"app.kubernetes.io/name": "densenet", "model-version": "3", "pod-template-hash": "6c9d4b7f8"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "densenet-6c9d4b7f8", "uid": "rs-3", "controller": true}]
        },
        "spec": {"nodeName": NODE, "containers": [{"name": "triton", "image": "nvcr.io/nvidia/tritonserver:24.05-py3",
            "ports": [{"containerPort": 8000}, {"containerPort": 8001}, {"containerPort": 8002}]}]},
        "status": {"phase": "Running", "podIP": "10.42.0.31",
            "conditions": [{"type": "Ready", "status": "True"}],
            "containerStatuses": [{"name": "triton", "ready": true, "restartCount": 4, "image": "nvcr.io/nvidia/tritonserver:24.05-py3",
                "imageID": "nvcr.io/nvidia/tritonserver@sha256:EEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEEE"}]}
    })
}

/// Not a model: a generic `app.kubernetes.io/name` without the hint, but annotated for scraping.
fn nginx_pod() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nginx-0", "namespace": "web", "uid": "uid-nginx",
            "labels": {"app.kubernetes.io/name": "nginx"},
            "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9113"}},
        "spec": {"nodeName": NODE, "containers": [{"name": "nginx", "image": "nginx:1.27"}]},
        "status": {"phase": "Running", "podIP": "10.42.0.41", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

fn pod(v: Value) -> Pod {
    serde_json::from_value(v).expect("valid Pod")
}

fn old_ovms(ready: bool, terminating: bool) -> Value {
    ovms_pod(
        "model-1-7d9f8b6c5d-x2x4q",
        "7d9f8b6c5d",
        "uid-ovms-old",
        "1-1",
        DIGEST_A,
        ready,
        terminating,
        "10.42.0.11",
    )
}
fn new_ovms(ready: bool) -> Value {
    ovms_pod(
        "model-1-5f6b9c8d7e-q8w2n",
        "5f6b9c8d7e",
        "uid-ovms-new",
        "1-2",
        DIGEST_B,
        ready,
        false,
        "10.42.0.12",
    )
}

#[test]
#[allow(clippy::type_complexity)]
fn extraction_table() {
    let rules = Rules::default();
    // (pod, model, version, digest, deployment, ready, restarts, target URLs)
    let cases: Vec<(Value, Option<&str>, &str, &str, &str, bool, i64, Vec<&str>)> = vec![
        (
            old_ovms(true, false),
            Some("tensorflow-housing"),
            "1-1",
            DIGEST_A,
            "model-1",
            true,
            1,
            vec!["http://10.42.0.11:8080/metrics"],
        ),
        (
            kserve_pod(),
            Some("sklearn-iris"),
            "v0.13.0",
            "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd",
            "sklearn-iris-predictor-00001-deployment",
            true,
            0,
            vec!["http://10.42.0.21:8080/metrics"],
        ),
        (
            triton_pod(),
            Some("densenet"),
            "3",
            "sha256:eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee",
            "densenet",
            true,
            4,
            vec!["http://10.42.0.31:8002/metrics"],
        ),
        (
            nginx_pod(),
            None,
            "",
            "",
            "",
            true,
            0,
            vec!["http://10.42.0.41:9113/metrics"],
        ),
    ];
    for (v, model, version, digest, deployment, ready, restarts, urls) in cases {
        let info = pod_info(&pod(v), &rules);
        assert_eq!(
            info.model.as_ref().map(|m| m.model.as_str()),
            model,
            "{}",
            info.name
        );
        if let Some(m) = &info.model {
            assert_eq!(
                (m.version.as_str(), m.digest.as_str(), m.deployment.as_str()),
                (version, digest, deployment),
                "{}",
                info.name
            );
        }
        assert_eq!(
            (info.ready, info.restarts),
            (ready, restarts),
            "{}",
            info.name
        );
        let got: Vec<String> = scrape_targets(&info, &rules)
            .into_iter()
            .map(|t| t.url)
            .collect();
        assert_eq!(got, urls, "{}", info.name);
    }

    // The hint: a generic key counts with app.kubernetes.io/component=modelserver.
    let mut p = nginx_pod();
    p["metadata"]["labels"]["app.kubernetes.io/component"] = json!("modelserver");
    assert_eq!(pod_info(&pod(p), &rules).model.unwrap().model, "nginx");
    // prometheus.io/scrape=false wins over everything.
    let mut p = triton_pod();
    p["metadata"]["annotations"] = json!({"prometheus.io/scrape": "false"});
    assert!(pod_info(&pod(p), &rules).endpoints.is_empty());
    // MLServer default port; prometheus.io/path + scheme annotations.
    let mut p = triton_pod();
    p["spec"]["containers"][0]["image"] = json!("seldonio/mlserver:1.6.0");
    assert_eq!(
        scrape_targets(&pod_info(&pod(p.clone()), &rules), &rules)[0].url,
        "http://10.42.0.31:8082/metrics"
    );
    p["metadata"]["annotations"] = json!({"prometheus.io/scrape": "true", "prometheus.io/port": "9000", "prometheus.io/path": "/stats", "prometheus.io/scheme": "https"});
    let t = &scrape_targets(&pod_info(&pod(p), &rules), &rules)[0];
    assert_eq!(t.url, "https://10.42.0.31:9000/stats");
    assert_eq!(t.identity.instance, "10.42.0.31:9000");
    assert!(t
        .identity
        .labels
        .contains(&("pod".into(), "densenet-6c9d4b7f8-k9z7m".into())));
    assert!(t
        .identity
        .resource
        .contains(&("model.name".into(), "densenet".into())));
    assert!(t
        .identity
        .resource
        .contains(&("model.version".into(), "3".into())));
    // No IP yet: no targets.
    let mut p = triton_pod();
    p["status"]["podIP"] = Value::Null;
    assert!(scrape_targets(&pod_info(&pod(p), &rules), &rules).is_empty());
}

#[test]
fn digest_tag_and_owner_helpers() {
    let hex = "0123456789abcdef".repeat(4);
    for (id, want) in [
        (
            format!("docker-pullable://quay.io/x/y@sha256:{hex}"),
            format!("sha256:{hex}"),
        ),
        (
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{hex}"),
        ),
        (format!("quay.io/x/y@sha256:{hex}"), format!("sha256:{hex}")),
        ("quay.io/x/y:1".to_string(), String::new()),
        ("sha256:abc".to_string(), String::new()),
    ] {
        assert_eq!(normalize_digest(&id), want, "{id}");
    }
    assert_eq!(
        image_tag("quay.io/rhoai-edge/model:1-3@sha256:x"),
        Some("1-3")
    );
    assert_eq!(image_tag("localhost:5000/model"), None);
    assert_eq!(image_tag("localhost:5000/model:v2"), Some("v2"));
    let mut p = old_ovms(true, false);
    assert_eq!(deployment_of(&pod(p.clone())), "model-1");
    p["metadata"]["ownerReferences"][0]["kind"] = json!("StatefulSet");
    p["metadata"]["ownerReferences"][0]["name"] = json!("ovms");
    assert_eq!(deployment_of(&pod(p)), "ovms");
}

/// Image ids come from the API server as any string: none of them may panic the
/// extraction (which would stop discovery), a malformed digest is an error.
#[test]
fn untrusted_image_ids_are_read_by_characters() {
    let hex = "0123456789abcdef".repeat(4);
    let digest = format!("sha256:{hex}");
    let huge = format!("repo@sha256:{}", "a".repeat(1 << 20));
    let cases: Vec<(String, Option<&str>)> = vec![
        (format!("repo@sha256:{hex}"), Some(&digest)),
        // A two-byte character across byte 64 of the digest.
        (
            format!("repo@sha256:{}é{}", &hex[..63], "0".repeat(8)),
            None,
        ),
        (format!("repo@sha256:{}", "é".repeat(40)), None),
        (format!("repo@sha256:{}🦀", "🦀".repeat(16)), None),
        // Anything but a hex digit may follow the 64.
        (format!("repo@sha256:{hex}é"), Some(&digest)),
        (format!("repo@sha256:{hex}0"), None),
        ("repo@sha256:abc".into(), None),
        ("repo@sha256:".into(), None),
        (huge.clone(), None),
        ("ǅ@SHA256:ǅ".into(), None),
    ];
    for (id, want) in &cases {
        let shown = id.chars().take(80).collect::<String>();
        match (parse_digest(id), want) {
            (Ok(Some(got)), Some(w)) => assert_eq!(&got, w, "{shown}"),
            (Err(e), None) => assert!(e.to_string().len() < 300, "{shown}: bounded error"),
            (got, _) => panic!("{shown}: {got:?}, want {want:?}"),
        }
        assert_eq!(normalize_digest(id), want.unwrap_or(""), "{shown}");
    }
    for id in ["repo:1", "", "é", "sha256"] {
        assert_eq!(parse_digest(id), Ok(None), "{id}");
    }
    // The pod is kept, without a digest.
    let mut p = old_ovms(true, false);
    p["status"]["containerStatuses"][0]["imageID"] = json!(format!("x@sha256:{}", "é".repeat(40)));
    p["spec"]["containers"][0]["image"] = json!(huge);
    let info = pod_info(&pod(p), &Rules::default());
    assert_eq!(info.model.expect("still a model pod").digest, "");
}

#[test]
fn otlp_pushes_from_model_pods_are_enriched() {
    let rules = Rules::default();
    let snap = Snapshot::from_pods([
        pod_info(&pod(old_ovms(true, false)), &rules),
        pod_info(&pod(nginx_pod()), &rules),
    ]);
    let kv = |k: &str, v: &str| KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    };
    let res = |attrs: Vec<KeyValue>| ResourceMetrics {
        resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: attrs,
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut req = ExportMetricsServiceRequest {
        resource_metrics: vec![
            res(vec![kv("k8s.pod.uid", "uid-ovms-old")]),
            res(vec![
                kv("k8s.pod.name", "model-1-7d9f8b6c5d-x2x4q"),
                kv("k8s.namespace.name", "tensorflow-housing-app"),
            ]),
            res(vec![kv("k8s.pod.ip", "10.42.0.11")]),
            res(vec![]), // found by the peer address
            res(vec![kv("k8s.pod.uid", "uid-nginx")]),
            res(vec![
                kv("model.name", "own"),
                kv("k8s.pod.uid", "uid-ovms-old"),
            ]),
        ],
    };
    let peer = Some("10.42.0.11:53211".parse().unwrap());
    let resources = req.resource_metrics.iter_mut().map(|rm| &mut rm.resource);
    assert_eq!(enrich_models(&snap, resources, peer), 4);
    for rm in &req.resource_metrics[..4] {
        let a = &rm.resource.as_ref().unwrap().attributes;
        assert!(a.contains(&kv("model.name", "tensorflow-housing")), "{a:?}");
        assert!(a.contains(&kv("model.version", "1-1")));
    }
    assert!(!req.resource_metrics[4]
        .resource
        .as_ref()
        .unwrap()
        .attributes
        .iter()
        .any(|k| k.key == "model.name"));
    let own = &req.resource_metrics[5]
        .resource
        .as_ref()
        .unwrap()
        .attributes;
    assert_eq!(own.iter().filter(|k| k.key == "model.name").count(), 1);
}

// ---------------------------------------------------------------------------------
// The watcher against a mock API server.

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn watch_body(events: &[(&str, Value)]) -> Body {
    let mut s = String::new();
    for (t, o) in events {
        s.push_str(&json!({"type": t, "object": o}).to_string());
        s.push('\n');
    }
    Body::from(s.into_bytes())
}

/// Serves the LIST, then one WATCH response per phase (the next one only after `go`
/// fires), then leaves further watches pending.
async fn api_server(
    mut handle: Handle,
    list: Vec<Value>,
    phases: Vec<Vec<(&'static str, Value)>>,
    mut go: tokio::sync::mpsc::Receiver<()>,
) {
    let mut phases = phases.into_iter();
    let mut pending = Vec::new();
    let mut first_watch = true;
    while let Some((req, send)) = handle.next_request().await {
        let uri = req.uri().to_string();
        assert!(uri.starts_with("/api/v1/pods?"), "{uri}");
        assert!(
            uri.contains("fieldSelector=spec.nodeName%3Dedge-node-1"),
            "node-local field selector: {uri}"
        );
        if !uri.contains("watch=true") {
            let body = json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "100"}, "items": list});
            send.send_response(
                Response::builder()
                    .body(Body::from(body.to_string().into_bytes()))
                    .unwrap(),
            );
            continue;
        }
        if !first_watch && go.recv().await.is_none() {
            pending.push(send);
            continue;
        }
        first_watch = false;
        match phases.next() {
            Some(events) => {
                send.send_response(Response::builder().body(watch_body(&events)).unwrap())
            }
            None => pending.push(send), // no more events: the watch stays open
        }
    }
}

fn info_set(snap: &Snapshot) -> BTreeSet<BTreeMap<String, String>> {
    model::series(snap)
        .into_iter()
        .map(|s| s.labels.into_iter().collect())
        .collect()
}

async fn wait_for(
    rx: &mut discover::SnapshotRx,
    what: &str,
    f: impl Fn(&Snapshot) -> bool,
) -> Arc<Snapshot> {
    let r = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let s = rx.borrow_and_update().clone();
            if f(&s) {
                return s;
            }
            rx.changed().await.expect("watcher alive");
        }
    })
    .await;
    r.unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", info_set(&rx.borrow())))
}

fn values(rm: &ResourceMetrics, name: &str) -> Vec<(BTreeMap<String, String>, Option<f64>)> {
    rm.scope_metrics[0]
        .metrics
        .iter()
        .filter(|m| m.name == name)
        .flat_map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => g.data_points.clone(),
            _ => vec![],
        })
        .map(|p| {
            let labels = p
                .attributes
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        match &kv.value.as_ref().unwrap().value {
                            Some(any_value::Value::StringValue(s)) => s.clone(),
                            _ => String::new(),
                        },
                    )
                })
                .collect();
            let v = match p.value {
                Some(number_data_point::Value::AsDouble(v)) => Some(v),
                _ => None,
            };
            (labels, v)
        })
        .collect()
}

#[tokio::test]
async fn watcher_follows_a_rollout_and_model_info_changes() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (go_tx, go_rx) = tokio::sync::mpsc::channel(4);
    let list = vec![
        old_ovms(true, false),
        kserve_pod(),
        triton_pod(),
        nginx_pod(),
    ];
    let phases = vec![
        // Rollout starts: the new ReplicaSet's pod appears (not ready yet).
        vec![("ADDED", new_ovms(false))],
        // The new pod becomes ready; the old one terminates and is deleted.
        vec![
            ("MODIFIED", new_ovms(true)),
            ("MODIFIED", old_ovms(false, true)),
            ("DELETED", old_ovms(false, true)),
        ],
    ];
    tokio::spawn(api_server(handle, list, phases, go_rx));
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
    let shutdown = CancellationToken::new();
    let (rules_tx, rules) = tokio::sync::watch::channel(Rules::default());
    tokio::spawn(discover::watch::run(
        client,
        NODE.into(),
        rules,
        tx,
        restarts(),
        shutdown.clone(),
    ));

    let mut previous = BTreeSet::new();
    // Initial list (and the first watch phase may already be in): 3 models, digest A.
    let s = wait_for(&mut rx, "the initial pods", |s| s.models().count() >= 3).await;
    let infos = info_set(&s);
    assert!(infos.iter().any(|l| l["model"] == "tensorflow-housing"
        && l["digest"] == DIGEST_A
        && l["version"] == "1-1"
        && l["deployment"] == "model-1"));
    assert!(infos
        .iter()
        .any(|l| l["model"] == "sklearn-iris" && l["namespace"] == "kserve-test"));
    assert!(infos.iter().any(|l| l["model"] == "densenet"
        && l["version"] == "3"
        && l["image"] == "nvcr.io/nvidia/tritonserver:24.05-py3"));
    assert!(
        !infos.iter().any(|l| l["pod"] == "nginx-0"),
        "not an inference pod"
    );
    assert_eq!(
        s.scrape_targets(&Rules::default()).len(),
        s.pods.len(),
        "one target per pod; nginx too (annotation)"
    );
    let _ = model::build(&s, &mut previous, 1);

    // Phase 1: both OVMS pods, the new one not ready.
    let s = wait_for(&mut rx, "the new pod", |s| s.models().count() == 4).await;
    let rm = model::build(&s, &mut previous, 2);
    let ready = values(&rm, model::READY);
    assert!(ready
        .iter()
        .any(|(l, v)| l["digest"] == DIGEST_B && *v == Some(0.0)));
    assert!(ready
        .iter()
        .any(|(l, v)| l["digest"] == DIGEST_A && *v == Some(1.0)));
    go_tx.send(()).await.unwrap();

    // Phase 2: only the new digest, ready; the old label set gets stale markers.
    let s = wait_for(&mut rx, "the rollout to finish", |s| {
        s.models().count() == 3
            && s.models()
                .any(|(p, _)| p.name.starts_with("model-1-5f6b") && p.ready)
    })
    .await;
    let rm = model::build(&s, &mut previous, 3);
    let info = values(&rm, model::INFO);
    let live: Vec<&String> = info
        .iter()
        .filter(|(l, v)| l["model"] == "tensorflow-housing" && v.is_some())
        .map(|(l, _)| &l["digest"])
        .collect();
    assert_eq!(live, vec![DIGEST_B]);
    assert!(
        info.iter()
            .any(|(l, v)| l["digest"] == DIGEST_A && v.is_none()),
        "stale marker for the old pod's model_info"
    );
    assert!(values(&rm, model::READY)
        .iter()
        .any(|(l, v)| l["digest"] == DIGEST_B && *v == Some(1.0)));
    assert!(values(&rm, model::RESTARTS)
        .iter()
        .any(|(l, v)| l["model"] == "densenet" && *v == Some(4.0)));
    assert_eq!(
        rm.scope_metrics[0].scope.as_ref().unwrap().name,
        "edgewatch.scrape"
    );
    // A further emission without change: no stale markers any more.
    let rm = model::build(&s, &mut previous, 4);
    assert!(values(&rm, model::INFO).iter().all(|(_, v)| v.is_some()));

    // Reloaded rules apply to the pods known at once: no label names a model now.
    rules_tx.send_replace(Rules {
        model_labels: Vec::new(),
        hinted_labels: Vec::new(),
        ..Rules::default()
    });
    wait_for(&mut rx, "the reloaded rules", |s| s.models().count() == 0).await;
    shutdown.cancel();
}

fn restarts() -> prometheus::IntCounter {
    prometheus::IntCounter::new("restarts", "restarts").unwrap()
}

/// A pod whose image id has a non-ASCII digest, listed and then modified, leaves
/// discovery running: the pods after it are still seen.
#[tokio::test]
async fn a_non_ascii_digest_does_not_stop_the_watch() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(service, "default");
    let (go_tx, go_rx) = tokio::sync::mpsc::channel(4);
    let bad_id = format!("quay.io/x@sha256:{}é{}", "a".repeat(63), "b".repeat(8));
    let mut bad = old_ovms(true, false);
    bad["status"]["containerStatuses"][0]["imageID"] = json!(bad_id);
    bad["spec"]["containers"][0]["image"] = json!("quay.io/rhoai-edge/tensorflow-housing:1-1");
    let mut bad_again = bad.clone();
    bad_again["metadata"]["resourceVersion"] = json!("11");
    let mut triton = triton_pod();
    triton["metadata"]["resourceVersion"] = json!("12");
    let phases = vec![vec![("MODIFIED", bad_again)], vec![("ADDED", triton)]];
    tokio::spawn(api_server(handle, vec![bad, kserve_pod()], phases, go_rx));
    let (tx, mut rx) = tokio::sync::watch::channel(Arc::new(Snapshot::default()));
    let shutdown = CancellationToken::new();
    let restarts = restarts();
    let (_rules_tx, rules) = tokio::sync::watch::channel(Rules::default());
    tokio::spawn(discover::watch::run(
        client,
        NODE.into(),
        rules,
        tx,
        restarts.clone(),
        shutdown.clone(),
    ));
    let s = wait_for(&mut rx, "the listed pods", |s| s.models().count() == 2).await;
    let (_, m) = s
        .models()
        .find(|(_, m)| m.model == "tensorflow-housing")
        .expect("the pod with the bad digest is kept");
    assert_eq!(m.digest, "", "the bad digest is skipped");
    go_tx.send(()).await.unwrap();
    wait_for(&mut rx, "the pod added after it", |s| {
        s.models().count() == 3
    })
    .await;
    assert_eq!(restarts.get(), 0, "no panic to recover from");
    shutdown.cancel();
}
