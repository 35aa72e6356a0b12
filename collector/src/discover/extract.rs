//! Pure extraction: a `Pod` → what the collector needs of it (model metadata, scrape
//! targets). No I/O; table-tested here, fed by `watch.rs` in production.

use crate::log_limit::LogLimit;
use crate::receive::scrape::{ScrapeTarget, TargetIdentity};
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Which pods are inference pods, and how their targets are scraped.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Label keys naming the model; the first one present (and non-empty) wins.
    pub model_labels: Vec<String>,
    /// Keys of `model_labels` that count only with a hint (see [`Rules::hint`]).
    pub hinted_labels: Vec<String>,
    /// A hinted key counts when the pod's `app.kubernetes.io/component` equals this, or
    /// when a container runs a known model server image.
    pub hint: String,
    /// `job` of pod targets.
    pub job: String,
    pub interval: Duration,
    pub timeout: Duration,
}

impl Default for Rules {
    fn default() -> Self {
        let d = edgewatch_config::collector::DiscoveryConfig::default();
        Rules {
            model_labels: d.model_labels,
            hinted_labels: d.hinted_labels,
            hint: d.modelserver_hint,
            job: "kubernetes-pods".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Metadata of an inference pod's model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelMeta {
    pub model: String,
    /// Label `model-version`, else the image tag.
    pub version: String,
    /// The model container's image without `@digest`.
    pub image: String,
    /// `sha256:<64 hex>` from `status.containerStatuses[].imageID`, or empty.
    pub digest: String,
    /// Owning Deployment (ReplicaSet owner minus the pod-template-hash), or the owner.
    pub deployment: String,
}

/// Where to scrape a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEndpoint {
    pub scheme: String,
    pub port: u16,
    pub path: String,
}

/// What the collector knows of one pod on its node.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub ip: Option<String>,
    pub ready: bool,
    pub restarts: i64,
    pub terminating: bool,
    /// `Some` for inference pods.
    pub model: Option<ModelMeta>,
    pub endpoints: Vec<PodEndpoint>,
}

/// Known model servers: (image substring, metrics port, path). OVMS serves metrics on
/// its REST port (`--rest_port`), found separately.
const KNOWN_SERVERS: &[(&str, u16, &str)] = &[
    ("tritonserver", 8002, "/metrics"),
    ("mlserver", 8082, "/metrics"),
    ("vllm", 8000, "/metrics"),
];

fn is_ovms(image: &str) -> bool {
    image.contains("model_server") || image.contains("ovms")
}

/// OVMS started by its binary or flags (ai-edge images bundle the model with OVMS under
/// the model's own image name).
fn runs_ovms(c: &Container) -> bool {
    c.command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .any(|a| a.ends_with("/ovms") || a == "ovms" || a.starts_with("--rest_port"))
}

fn known_server(image: &str) -> bool {
    is_ovms(image)
        || KNOWN_SERVERS.iter().any(|(s, _, _)| image.contains(s))
        || image.contains("kserve")
}

/// `sha256:<64 lowercase hex>` out of an imageID (`docker-pullable://repo@sha256:…`,
/// `repo@sha256:…`, `sha256:…`); empty if there is none or it is malformed.
pub fn normalize_digest(image_id: &str) -> String {
    parse_digest(image_id).ok().flatten().unwrap_or_default()
}

/// An imageID that names a sha256 digest but not as 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed sha256 digest in image id {0:?} (want 64 hex digits)")]
pub struct BadDigest(String);

/// Longest part of an untrusted image id repeated in an error or a log line.
const MAX_SHOWN: usize = 128;

/// The digest of an imageID: `Ok(None)` when it names none, an error when it names
/// one that is not `sha256:` and 64 hex digits. The id comes from the API server
/// as any string: it is read by characters, never sliced at byte offsets.
pub fn parse_digest(image_id: &str) -> Result<Option<String>, BadDigest> {
    const PREFIX: &str = "sha256:";
    // ASCII lowercasing keeps every byte offset, so `i` is a boundary in both.
    let lower = image_id.to_ascii_lowercase();
    let Some(tail) = lower
        .rfind(PREFIX)
        .and_then(|i| lower.get(i + PREFIX.len()..))
    else {
        return Ok(None);
    };
    let mut chars = tail.chars();
    let hex: String = chars.by_ref().take(64).collect();
    let more_hex = chars.next().is_some_and(|c| c.is_ascii_hexdigit());
    if hex.len() == 64 && hex.bytes().all(|c| c.is_ascii_hexdigit()) && !more_hex {
        return Ok(Some(format!("{PREFIX}{hex}")));
    }
    Err(BadDigest(image_id.chars().take(MAX_SHOWN).collect()))
}

/// The digest `image_id` names; a malformed one is logged (at warn level once a
/// minute: every pod event re-reads every pod) and skipped.
fn reported_digest(pod: &Pod, image_id: &str) -> Option<String> {
    static LOG: Mutex<LogLimit> = Mutex::new(LogLimit::new(Duration::from_secs(60)));
    let e = match parse_digest(image_id) {
        Ok(d) => return d,
        Err(e) => e,
    };
    let md = &pod.metadata;
    let (ns, name) = (md.namespace.as_deref(), md.name.as_deref());
    if LOG.lock().is_ok_and(|mut l| l.due()) {
        tracing::warn!(namespace = ?ns, pod = ?name, error = %e, "ignoring the image digest");
    } else {
        tracing::debug!(namespace = ?ns, pod = ?name, error = %e, "ignoring the image digest");
    }
    None
}

/// The image reference without `@digest`.
pub fn strip_digest(image: &str) -> &str {
    image.split_once('@').map(|(a, _)| a).unwrap_or(image)
}

/// The tag of an image reference (`quay.io/org/model:1-3@sha256:…` → `1-3`).
pub fn image_tag(image: &str) -> Option<&str> {
    let name = strip_digest(image);
    let last = name.rsplit('/').next().unwrap_or(name);
    last.split_once(':')
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty())
}

/// The Deployment that owns a pod through its ReplicaSet.
pub fn deployment_of(pod: &Pod) -> String {
    let owners = pod.metadata.owner_references.as_deref().unwrap_or(&[]);
    let Some(owner) = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())
    else {
        return String::new();
    };
    if owner.kind != "ReplicaSet" {
        return owner.name.clone();
    }
    let hash = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    let deployment = hash.and_then(|h| owner.name.strip_suffix(h.as_str())?.strip_suffix('-'));
    match deployment {
        Some(d) => d.to_string(),
        None => split_last_dash(&owner.name),
    }
}

/// `name-<hash>` → `name`.
fn split_last_dash(name: &str) -> String {
    name.rsplit_once('-')
        .map(|(d, _)| d.to_string())
        .unwrap_or_else(|| name.to_string())
}

fn model_container(containers: &[Container]) -> Option<&Container> {
    containers
        .iter()
        .find(|c| c.name == "kserve-container")
        .or_else(|| {
            containers
                .iter()
                .find(|c| c.image.as_deref().is_some_and(known_server))
        })
        .or_else(|| containers.first())
}

fn model_name(
    labels: &BTreeMap<String, String>,
    containers: &[Container],
    rules: &Rules,
) -> Option<String> {
    for key in &rules.model_labels {
        let Some(v) = labels.get(key).filter(|v| !v.is_empty()) else {
            continue;
        };
        if rules.hinted_labels.contains(key) {
            let hinted = labels
                .get("app.kubernetes.io/component")
                .is_some_and(|c| *c == rules.hint)
                || containers
                    .iter()
                    .any(|c| c.image.as_deref().is_some_and(known_server));
            if !hinted {
                continue;
            }
        }
        return Some(v.clone());
    }
    None
}

fn port_of(c: &Container, names: &[&str]) -> Option<u16> {
    let ports = c.ports.as_deref().unwrap_or(&[]);
    ports
        .iter()
        .find(|p| p.name.as_deref().is_some_and(|n| names.contains(&n)))
        .or_else(|| ports.first())
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// OVMS' REST port: `--rest_port N` / `--rest_port=N` in args or command, else a port
/// named `http`/`rest`, else the first declared port.
fn ovms_rest_port(c: &Container) -> Option<u16> {
    let args: Vec<&String> = c
        .command
        .iter()
        .flatten()
        .chain(c.args.iter().flatten())
        .collect();
    for (i, a) in args.iter().enumerate() {
        if let Some(v) = a.strip_prefix("--rest_port=") {
            return v.parse().ok();
        }
        if a.as_str() == "--rest_port" {
            return args.get(i + 1).and_then(|v| v.parse().ok());
        }
    }
    port_of(c, &["http", "rest"])
}

fn endpoints(pod: &Pod, is_model: bool) -> Vec<PodEndpoint> {
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    if ann.get("prometheus.io/scrape").map(String::as_str) == Some("false") {
        return vec![];
    }
    let ep = |scheme: Option<&String>, port: u16, path: Option<&String>| PodEndpoint {
        scheme: scheme
            .filter(|s| *s == "https")
            .cloned()
            .unwrap_or_else(|| "http".into()),
        port,
        path: path
            .filter(|p| p.starts_with('/'))
            .cloned()
            .unwrap_or_else(|| "/metrics".into()),
    };
    if ann.get("prometheus.io/scrape").map(String::as_str) == Some("true") {
        let port = ann
            .get("prometheus.io/port")
            .and_then(|p| p.parse().ok())
            .or_else(|| {
                containers
                    .iter()
                    .find_map(|c| port_of(c, &["metrics", "http-metrics"]))
            });
        if let Some(port) = port {
            return vec![ep(
                ann.get("prometheus.io/scheme"),
                port,
                ann.get("prometheus.io/path"),
            )];
        }
    }
    if let Some(port) = ann
        .get("prometheus.kserve.io/port")
        .and_then(|p| p.parse().ok())
    {
        return vec![ep(None, port, ann.get("prometheus.kserve.io/path"))];
    }
    if !is_model {
        return vec![];
    }
    let mut out = Vec::new();
    for c in containers {
        let image = c.image.as_deref().unwrap_or("");
        if let Some((_, port, path)) = KNOWN_SERVERS.iter().find(|(s, _, _)| image.contains(s)) {
            out.push(PodEndpoint {
                scheme: "http".into(),
                port: *port,
                path: path.to_string(),
            });
        } else if is_ovms(image) || runs_ovms(c) {
            if let Some(port) = ovms_rest_port(c) {
                out.push(PodEndpoint {
                    scheme: "http".into(),
                    port,
                    path: "/metrics".into(),
                });
            }
        }
    }
    out.dedup();
    out
}

/// Everything the collector derives from one pod.
pub fn pod_info(pod: &Pod, rules: &Rules) -> PodInfo {
    let md = &pod.metadata;
    let labels = md.labels.clone().unwrap_or_default();
    let containers = pod.spec.as_ref().map(|s| &s.containers[..]).unwrap_or(&[]);
    let status = pod.status.as_ref();
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or(&[]);
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let restarts = statuses.iter().map(|s| i64::from(s.restart_count)).sum();
    let model = model_name(&labels, containers, rules).map(|model| {
        let c = model_container(containers);
        let cname = c.map(|c| c.name.as_str()).unwrap_or("");
        let cstatus = statuses.iter().find(|s| s.name == cname);
        let spec_image = c.and_then(|c| c.image.clone()).unwrap_or_default();
        let status_image = cstatus.map(|s| s.image.clone()).unwrap_or_default();
        let version = labels
            .get("model-version")
            .filter(|v| !v.is_empty())
            .cloned()
            .or_else(|| {
                image_tag(&spec_image)
                    .or_else(|| image_tag(&status_image))
                    .map(str::to_string)
            })
            .unwrap_or_default();
        let digest = [
            cstatus.map(|s| s.image_id.as_str()),
            Some(spec_image.as_str()),
        ]
        .into_iter()
        .flatten()
        .find_map(|id| reported_digest(pod, id))
        .unwrap_or_default();
        ModelMeta {
            model,
            version,
            image: strip_digest(&spec_image).to_string(),
            digest,
            deployment: deployment_of(pod),
        }
    });
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    let ip = status
        .and_then(|s| s.pod_ip.clone())
        .filter(|ip| !ip.is_empty());
    let live = !matches!(phase, "Succeeded" | "Failed");
    PodInfo {
        uid: md.uid.clone().unwrap_or_default(),
        namespace: md.namespace.clone().unwrap_or_default(),
        name: md.name.clone().unwrap_or_default(),
        endpoints: if ip.is_some() && live {
            endpoints(pod, model.is_some())
        } else {
            vec![]
        },
        ip,
        ready,
        restarts,
        terminating: md.deletion_timestamp.is_some(),
        model,
    }
}

/// The scrape targets of a pod: `job` = `rules.job`, `instance` = `ip:port`, labels
/// `namespace`/`pod` (as Prometheus' usual kubernetes-pods relabelling adds), resource
/// attributes `model.name`/`model.version` and `k8s.*` for inference pods.
pub fn scrape_targets(p: &PodInfo, rules: &Rules) -> Vec<ScrapeTarget> {
    let Some(ip) = &p.ip else { return vec![] };
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.clone()
    };
    p.endpoints
        .iter()
        .map(|e| {
            let instance = format!("{host}:{}", e.port);
            let mut resource = vec![
                ("k8s.namespace.name".to_string(), p.namespace.clone()),
                ("k8s.pod.name".to_string(), p.name.clone()),
                ("k8s.pod.uid".to_string(), p.uid.clone()),
            ];
            if let Some(m) = &p.model {
                resource.push(("model.name".into(), m.model.clone()));
                if !m.version.is_empty() {
                    resource.push(("model.version".into(), m.version.clone()));
                }
            }
            ScrapeTarget {
                url: format!("{}://{instance}{}", e.scheme, e.path),
                interval: rules.interval,
                timeout: rules.timeout.min(rules.interval),
                identity: TargetIdentity {
                    job: rules.job.clone(),
                    instance,
                    labels: vec![
                        ("namespace".into(), p.namespace.clone()),
                        ("pod".into(), p.name.clone()),
                    ],
                    resource,
                },
                limits: None,
            }
        })
        .collect()
}
