//! The trust wiring of `deploy/` (issue #13): every config sets the TLS, token and
//! basic-auth keys of the issue's Interface, spelled as there; every file those keys
//! name is mounted from a Secret, and that Secret is what cert-manager (a `Certificate`'s
//! `secretName`) or the plain-Secret component provides; server certificates name the
//! host the collectors dial, client certificates carry the cluster's name as their CN.

use edgewatch_testkit::kustomize::{
    documents, generated, of_kind, overlay, render, render_text, strs,
};
use serde_yaml_ng::Value;
use std::collections::BTreeSet;

const TLS_DIR: &str = "/etc/edgewatch/tls";
const WORKLOADS: [&str; 3] = ["Deployment", "StatefulSet", "DaemonSet"];

/// `base` with `components`, rendered in a temporary overlay.
fn render_with(base: &str, components: &[&str]) -> Vec<Value> {
    let dir = tempfile::tempdir().expect("tempdir");
    documents(&render_text(&overlay(dir.path(), base, components)))
}

/// The one workload of `docs` and every config file of its ConfigMap, parsed.
fn workload_and_configs(docs: &[Value]) -> (&Value, Vec<(String, Value)>) {
    let workloads: Vec<&Value> = WORKLOADS.iter().flat_map(|k| of_kind(docs, k)).collect();
    assert_eq!(workloads.len(), 1, "one workload");
    // The config ConfigMap is named after the workload (the rule files have their own).
    let name = workloads[0]["metadata"]["name"]
        .as_str()
        .expect("workload name");
    let data = generated(docs, "ConfigMap", name)["data"]
        .as_mapping()
        .expect("ConfigMap data");
    let configs = data
        .iter()
        .map(|(k, v)| {
            let name = k.as_str().unwrap().to_string();
            let doc = serde_yaml_ng::from_str(v.as_str().unwrap()).expect("config YAML");
            (name, doc)
        })
        .collect();
    (workloads[0], configs)
}

/// A file the pod sees: its path and the Secret (and key) it comes from.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Mounted {
    path: String,
    secret: String,
    key: String,
}

/// Every Secret key the first container sees as a file, through projected or secret
/// volumes (keys without `items` are taken from the rendered Secret).
fn mounted_secret_files(docs: &[Value], workload: &Value) -> BTreeSet<Mounted> {
    let pod = &workload["spec"]["template"]["spec"];
    let mut files = BTreeSet::new();
    for m in pod["containers"][0]["volumeMounts"]
        .as_sequence()
        .expect("mounts")
    {
        // Not among the pod's volumes: a volumeClaimTemplates claim (state, no Secret).
        let Some(volume) = pod["volumes"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|v| v["name"] == m["name"])
        else {
            continue;
        };
        let dir = m["mountPath"].as_str().unwrap();
        let mut add = |secret: &str, items: &Value| {
            for (key, path) in secret_items(docs, secret, items) {
                let path = format!("{dir}/{path}");
                let secret = secret.to_string();
                files.insert(Mounted { path, secret, key });
            }
        };
        if let Some(name) = volume["secret"]["secretName"].as_str() {
            add(name, &volume["secret"]["items"]);
        }
        for source in volume["projected"]["sources"]
            .as_sequence()
            .into_iter()
            .flatten()
        {
            if let Some(name) = source["secret"]["name"].as_str() {
                add(name, &source["secret"]["items"]);
            }
        }
    }
    files
}

/// (key, relative path) of a Secret volume source.
fn secret_items(docs: &[Value], secret: &str, items: &Value) -> Vec<(String, String)> {
    if let Some(items) = items.as_sequence() {
        return items
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap().into(),
                    i["path"].as_str().unwrap().into(),
                )
            })
            .collect();
    }
    let rendered = of_kind(docs, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"].as_str() == Some(secret))
        .unwrap_or_else(|| panic!("Secret {secret} without items must be rendered"));
    rendered["data"]
        .as_mapping()
        .expect("Secret data")
        .keys()
        .map(|k| (k.as_str().unwrap().into(), k.as_str().unwrap().into()))
        .collect()
}

/// The file paths a config names under the Interface's keys, with the key path.
fn trust_files(config: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut tls = |at: &str, block: &Value| {
        for key in ["cert_file", "key_file", "client_ca_file", "ca_file"] {
            if let Some(p) = block[key].as_str() {
                out.push((format!("{at}.{key}"), p.to_string()));
            }
        }
    };
    tls("receivers.otlp.tls", &config["receivers"]["otlp"]["tls"]);
    tls("http.tls", &config["http"]["tls"]);
    tls("forward.tls", &config["forward"]["tls"]);
    tls("admin.tls", &config["admin"]["tls"]);
    for c in config["auth"]["clusters"]
        .as_sequence()
        .into_iter()
        .flatten()
    {
        out.push((
            "auth.clusters[].token_file".into(),
            c["token_file"].as_str().unwrap().into(),
        ));
    }
    if let Some(p) = config["forward"]["bearer_token_file"].as_str() {
        out.push(("forward.bearer_token_file".into(), p.into()));
    }
    out
}

/// Every file the configs name is mounted; returns the Secrets they come from.
fn assert_files_mounted(what: &str, docs: &[Value]) -> BTreeSet<String> {
    let (workload, configs) = workload_and_configs(docs);
    let mounted = mounted_secret_files(docs, workload);
    let mut secrets = BTreeSet::new();
    for (file, config) in &configs {
        let named = trust_files(config);
        assert!(!named.is_empty(), "{what} {file}: no TLS or token file");
        for (key, path) in named {
            let m = mounted
                .iter()
                .find(|m| m.path == path)
                .unwrap_or_else(|| panic!("{what} {file}: {key} = {path} is not mounted"));
            secrets.insert(m.secret.clone());
        }
    }
    secrets
}

/// The aggregator's configs: mTLS on OTLP (the client CA set: the CN is the cluster),
/// TLS and bcrypt basic auth on HTTP, HTTPS probes.
fn assert_aggregator_configs(what: &str, docs: &[Value]) {
    let (workload, configs) = workload_and_configs(docs);
    for (file, c) in &configs {
        let otlp = &c["receivers"]["otlp"]["tls"];
        assert_eq!(
            otlp["cert_file"].as_str(),
            Some(&*format!("{TLS_DIR}/tls.crt")),
            "{what} {file}"
        );
        assert_eq!(
            otlp["key_file"].as_str(),
            Some(&*format!("{TLS_DIR}/tls.key")),
            "{what} {file}"
        );
        assert_eq!(
            otlp["client_ca_file"].as_str(),
            Some(&*format!("{TLS_DIR}/ca.crt")),
            "{what} {file}"
        );
        assert!(
            c["http"]["tls"]["cert_file"].is_string(),
            "{what} {file}: http.tls"
        );
        let users = c["http"]["basic_auth_users"]
            .as_mapping()
            .expect("http.basic_auth_users");
        for (user, hash) in users {
            let hash = hash.as_str().unwrap();
            assert!(
                hash.starts_with("$2") && hash.len() == 60,
                "{what} {file}: {user:?} bcrypt"
            );
        }
    }
    assert_https_probes(what, workload);
}

/// The collector's config: forwards over https:// with its client certificate, admin
/// over TLS, HTTPS probes.
fn assert_collector_config(what: &str, docs: &[Value]) -> Value {
    let (workload, configs) = workload_and_configs(docs);
    let (_, c) = configs
        .into_iter()
        .find(|(f, _)| f == "collector.yaml")
        .expect("collector.yaml");
    assert!(
        c["forward"]["endpoint"]
            .as_str()
            .unwrap()
            .starts_with("https://"),
        "{what}"
    );
    let fwd = &c["forward"]["tls"];
    assert_eq!(
        fwd["ca_file"].as_str(),
        Some(&*format!("{TLS_DIR}/ca.crt")),
        "{what}"
    );
    assert!(
        c["admin"]["tls"]["cert_file"].is_string(),
        "{what}: admin.tls"
    );
    assert_https_probes(what, workload);
    c
}

fn assert_https_probes(what: &str, workload: &Value) {
    let c = &workload["spec"]["template"]["spec"]["containers"][0];
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            c[probe]["httpGet"]["scheme"].as_str(),
            Some("HTTPS"),
            "{what}: {probe}"
        );
    }
}

/// The one Certificate issuing into `secrets` (what the pod mounts): a server
/// certificate.
fn server_certificate<'a>(docs: &'a [Value], secrets: &BTreeSet<String>) -> &'a Value {
    let issuing: Vec<&Value> = of_kind(docs, "Certificate")
        .into_iter()
        .filter(|c| secrets.contains(c["spec"]["secretName"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(
        issuing.len(),
        1,
        "one Certificate issues the mounted Secret {secrets:?}"
    );
    assert_eq!(secrets.len(), 1, "the pod mounts one TLS Secret");
    assert!(strs(&issuing[0]["spec"]["usages"]).contains(&"server auth"));
    assert!(issuing[0]["spec"]["issuerRef"]["name"].is_string());
    issuing[0]
}

/// The Subject CNs of the client certificates in `docs`.
fn client_cns(docs: &[Value]) -> BTreeSet<&str> {
    of_kind(docs, "Certificate")
        .into_iter()
        .filter(|c| strs(&c["spec"]["usages"]).contains(&"client auth"))
        .filter_map(|c| c["spec"]["commonName"].as_str())
        .collect()
}

fn host_of(endpoint: &str) -> String {
    let uri: http::Uri = endpoint.parse().expect("forward.endpoint");
    uri.host().expect("host").to_string()
}

#[test]
fn aggregator_with_cert_manager_mounts_what_its_certificates_issue() {
    let docs = render_with(
        "deploy/aggregator",
        &["deploy/components/cert-manager/aggregator"],
    );
    assert_aggregator_configs("deploy/aggregator", &docs);
    let secrets = assert_files_mounted("deploy/aggregator", &docs);
    let server = server_certificate(&docs, &secrets);
    let namespace = server["metadata"]["namespace"].as_str();
    let workload = of_kind(&docs, "Deployment")[0];
    assert_eq!(
        namespace,
        workload["metadata"]["namespace"].as_str(),
        "Secret beside the pod"
    );

    // The host deploy/collector dials is in the server certificate; the collector's
    // cluster has a client certificate with its name as CN.
    let collector = assert_collector_config("deploy/collector", &render("deploy/collector"));
    let host = host_of(collector["forward"]["endpoint"].as_str().unwrap());
    assert!(
        strs(&server["spec"]["dnsNames"]).contains(&host.as_str()),
        "{host}"
    );
    let cluster = collector["cluster"].as_str().unwrap();
    assert!(
        client_cns(&docs).contains(cluster),
        "a client certificate with CN {cluster}"
    );
}

#[test]
fn sharded_aggregators_certificates_cover_every_replica_and_cluster() {
    let docs = render_with(
        "deploy/aggregator-sharded",
        &["deploy/components/cert-manager/aggregator-sharded"],
    );
    assert_aggregator_configs("deploy/aggregator-sharded", &docs);
    let secrets = assert_files_mounted("deploy/aggregator-sharded", &docs);
    let server = server_certificate(&docs, &secrets);

    // Each cluster overlay: its collector dials a name of the server certificate, and
    // its cluster has a client certificate.
    let root = edgewatch_testkit::kustomize::repo_root().join("deploy/aggregator-sharded/clusters");
    let mut clusters = BTreeSet::new();
    for entry in std::fs::read_dir(root).expect("clusters/") {
        let cluster = entry.unwrap().file_name().into_string().unwrap();
        let dir = format!("deploy/aggregator-sharded/clusters/{cluster}");
        let overlay_docs = render(&dir);
        let c = assert_collector_config(&dir, &overlay_docs);
        assert_files_mounted(&dir, &overlay_docs);
        let host = host_of(c["forward"]["endpoint"].as_str().unwrap());
        assert!(
            strs(&server["spec"]["dnsNames"]).contains(&host.as_str()),
            "{dir}: {host}"
        );
        assert_eq!(c["cluster"].as_str(), Some(cluster.as_str()));
        clusters.insert(cluster);
    }
    let clusters: BTreeSet<&str> = clusters.iter().map(String::as_str).collect();
    assert_eq!(
        client_cns(&docs),
        clusters,
        "a client certificate per cluster, CN = its name"
    );
}

#[test]
fn collector_with_cert_manager_mounts_its_client_certificate() {
    let docs = render_with(
        "deploy/collector",
        &["deploy/components/cert-manager/collector"],
    );
    let config = assert_collector_config("deploy/collector", &docs);
    let secrets = assert_files_mounted("deploy/collector", &docs);
    let certs = of_kind(&docs, "Certificate");
    assert_eq!(certs.len(), 1);
    let spec = &certs[0]["spec"];
    assert_eq!(
        secrets,
        BTreeSet::from([spec["secretName"].as_str().unwrap().to_string()])
    );
    assert_eq!(
        spec["commonName"], config["cluster"],
        "CN = the cluster's name"
    );
    assert!(strs(&spec["usages"]).contains(&"client auth"));
    assert_eq!(
        config["forward"]["tls"]["cert_file"].as_str(),
        Some(&*format!("{TLS_DIR}/tls.crt"))
    );
    assert_eq!(
        config["forward"]["tls"]["key_file"].as_str(),
        Some(&*format!("{TLS_DIR}/tls.key"))
    );
}

#[test]
fn plain_secrets_provide_what_the_pods_mount() {
    for role in ["aggregator", "collector"] {
        let what = format!("deploy/components/plain-secrets/{role}");
        let docs = render_with(&format!("deploy/{role}"), &[&what]);
        let secrets = assert_files_mounted(&what, &docs);
        let workload_ns = WORKLOADS
            .iter()
            .flat_map(|k| of_kind(&docs, k))
            .next()
            .unwrap()["metadata"]["namespace"]
            .clone();
        for name in secrets {
            let secret = of_kind(&docs, "Secret")
                .into_iter()
                .find(|s| s["metadata"]["name"].as_str() == Some(&name))
                .unwrap_or_else(|| panic!("{what}: Secret {name} rendered"));
            assert_eq!(secret["type"].as_str(), Some("kubernetes.io/tls"), "{what}");
            assert_eq!(
                secret["metadata"]["namespace"], workload_ns,
                "{what}: beside the pod"
            );
            for key in ["tls.crt", "tls.key", "ca.crt"] {
                assert!(secret["data"][key].is_string(), "{what}: {name} has {key}");
            }
        }
    }
}

#[test]
fn bearer_tokens_replace_client_certificates() {
    let what = "deploy/components/bearer-tokens/aggregator";
    let docs = render_with(
        "deploy/aggregator",
        &["deploy/components/plain-secrets/aggregator", what],
    );
    // Replaced, not added (`generated` finds exactly one).
    generated(&docs, "ConfigMap", "edgewatch-aggregator");
    assert_files_mounted(what, &docs);
    let (_, configs) = workload_and_configs(&docs);
    let c = &configs[0].1;
    assert!(
        c["receivers"]["otlp"]["tls"]["client_ca_file"].is_null(),
        "{what}: no client CA"
    );
    let clusters = c["auth"]["clusters"].as_sequence().expect("auth.clusters");
    for entry in clusters {
        let cluster = entry["cluster"].as_str().expect("auth.clusters[].cluster");
        assert_eq!(
            entry["token_file"].as_str(),
            Some(&*format!("/etc/edgewatch/tokens/{cluster}")),
            "{what}"
        );
    }

    let what = "deploy/components/bearer-tokens/collector";
    let docs = render_with(
        "deploy/collector",
        &["deploy/components/plain-secrets/collector", what],
    );
    generated(&docs, "ConfigMap", "edgewatch-collector");
    let c = assert_collector_config(what, &docs);
    assert_files_mounted(what, &docs);
    assert_eq!(
        c["forward"]["bearer_token_file"].as_str(),
        Some("/var/run/secrets/edgewatch/token"),
        "{what}"
    );
    assert!(
        c["forward"]["tls"]["cert_file"].is_null(),
        "{what}: no client certificate"
    );
}

#[test]
fn core_certificates_are_signed_by_the_ca_of_deploy_cert_manager_ca() {
    let ca = render("deploy/cert-manager-ca");
    let ca_issuer = of_kind(&ca, "ClusterIssuer")
        .into_iter()
        .find(|i| i["spec"]["ca"]["secretName"].is_string())
        .expect("a CA ClusterIssuer");
    let ca_cert = of_kind(&ca, "Certificate")[0];
    assert_eq!(ca_cert["spec"]["isCA"].as_bool(), Some(true));
    assert_eq!(
        ca_cert["spec"]["secretName"],
        ca_issuer["spec"]["ca"]["secretName"]
    );
    for (base, component) in [
        (
            "deploy/aggregator",
            "deploy/components/cert-manager/aggregator",
        ),
        (
            "deploy/aggregator-sharded",
            "deploy/components/cert-manager/aggregator-sharded",
        ),
    ] {
        for cert in of_kind(&render_with(base, &[component]), "Certificate") {
            let issuer = &cert["spec"]["issuerRef"];
            assert_eq!(
                issuer["kind"].as_str(),
                Some("ClusterIssuer"),
                "{component}"
            );
            assert_eq!(issuer["name"], ca_issuer["metadata"]["name"], "{component}");
        }
    }
}
