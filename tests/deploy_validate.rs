//! The configuration `deploy/` ships is what `edgewatch validate` accepts, loaded as a
//! pod would: each aggregator config with the rule files of its ConfigMap beside it and
//! the alerting keys in the environment the Secret sets; the GitOps checkout the
//! reconciler reads is the one the git-sync sidecar writes; the alerting-keys component
//! provides every key the pod asks for; the image's default configs validate too.

use edgewatch_testkit::kustomize::{documents, generated, of_kind, overlay, render, render_text};
use edgewatch_testkit::trust_keys::without_trust_keys;
use edgewatch_testkit::write;
use serde_yaml_ng::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const AGGREGATORS: [&str; 2] = ["deploy/aggregator", "deploy/aggregator-sharded"];
/// Components that replace the aggregator's config, each over deploy/aggregator.
const REPLACING: [&[&str]; 1] = [&[
    "deploy/components/plain-secrets/aggregator",
    "deploy/components/bearer-tokens/aggregator",
]];

/// Every rendering that ships an aggregator config: (name, documents).
fn aggregator_renderings(scratch: &Path) -> Vec<(String, Vec<Value>)> {
    let mut out: Vec<(String, Vec<Value>)> = AGGREGATORS
        .iter()
        .map(|layout| (layout.to_string(), render(layout)))
        .collect();
    for (i, components) in REPLACING.iter().enumerate() {
        let dir = scratch.join(format!("overlay-{i}"));
        std::fs::create_dir_all(&dir).expect("overlay directory");
        let text = render_text(&overlay(&dir, "deploy/aggregator", components));
        out.push((components.join(" + "), documents(&text)));
    }
    out
}
const ALERTING_SECRET: &str = "edgewatch-aggregator-alerting";

/// The aggregator workload (Deployment or StatefulSet) of `docs`.
fn aggregator(docs: &[Value]) -> &Value {
    let mut found = of_kind(docs, "Deployment");
    found.extend(of_kind(docs, "StatefulSet"));
    assert_eq!(found.len(), 1, "one aggregator workload");
    found[0]
}

fn container<'a>(workload: &'a Value, name: &str) -> &'a Value {
    workload["spec"]["template"]["spec"]["containers"]
        .as_sequence()
        .and_then(|cs| cs.iter().find(|c| c["name"].as_str() == Some(name)))
        .unwrap_or_else(|| panic!("container {name}"))
}

/// (variable, Secret, key) of every env var the container takes from a Secret.
fn secret_env(container: &Value) -> Vec<(String, String, String)> {
    container["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let r = &e["valueFrom"]["secretKeyRef"];
            Some((
                e["name"].as_str()?.to_string(),
                r["name"].as_str()?.to_string(),
                r["key"].as_str()?.to_string(),
            ))
        })
        .collect()
}

/// Every `${NAME}` in `text`.
fn env_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        let after = &rest[i + 2..];
        let end = after.find('}').expect("closed ${");
        names.insert(after[..end].to_string());
        rest = &after[end..];
    }
    names
}

/// `edgewatch validate ROLE FILE` with `env` set; panics with its output unless `ok`.
fn validate(role: &str, file: &Path, env: &[(String, String)]) {
    let out = Command::new(BIN)
        .args(["validate", role])
        .arg(file)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("edgewatch runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.trim() == "ok",
        "edgewatch validate {role} {}: {stdout}{}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn deployed_aggregator_configs_validate_with_their_rules_and_keys() {
    let scratch = tempfile::tempdir().expect("tempdir");
    for (layout, docs) in aggregator_renderings(scratch.path()) {
        let dir = tempfile::tempdir().expect("tempdir");
        // The projected volume at /etc/edgewatch: config files and rule files side by side.
        let etc = format!("{}/", dir.path().display());
        let rules = generated(&docs, "ConfigMap", "edgewatch-aggregator-rules")["data"]
            .as_mapping()
            .expect("rule files");
        assert!(!rules.is_empty(), "{layout}: no rule file");
        for (file, text) in rules {
            let file = file.as_str().unwrap();
            assert!(file.ends_with(".rules.yaml"), "{layout}: {file}");
            write(&dir.path().join(file), text.as_str().unwrap());
        }
        let pod = aggregator(&docs);
        let keys = secret_env(container(pod, "aggregator"));
        let configs = generated(&docs, "ConfigMap", "edgewatch-aggregator")["data"]
            .as_mapping()
            .expect("configs");
        for (file, text) in configs {
            let (file, text) = (file.as_str().unwrap(), text.as_str().unwrap());
            let config: Value = serde_yaml_ng::from_str(text).expect("config YAML");
            assert_eq!(
                config["rule_files"][0].as_str(),
                Some("/etc/edgewatch/*.rules.yaml"),
                "{layout} {file}: rule_files"
            );
            // Each ${VAR} is an env var the pod sets from the alerting Secret.
            let mut env = Vec::new();
            for var in env_references(text) {
                let (_, secret, _) = keys
                    .iter()
                    .find(|(name, _, _)| *name == var)
                    .unwrap_or_else(|| {
                        panic!("{layout} {file}: ${{{var}}} is not set from a Secret")
                    });
                assert_eq!(secret, ALERTING_SECRET, "{layout} {file}: {var}");
                // A PagerDuty routing key has 32 characters.
                env.push((var, "k".repeat(32)));
            }
            let path = dir.path().join(file);
            write(
                &path,
                &without_trust_keys(text).replace("/etc/edgewatch/", &etc),
            );
            validate("aggregator", &path, &env);
            assert_git_sync_feeds(&layout, pod, &config);
        }
    }
}

/// The reconciler reads `<root>/<link>` of the git-sync sidecar, whose volume the
/// aggregator mounts read-only at the same path (git's worktree links are absolute).
fn assert_git_sync_feeds(layout: &str, pod: &Value, config: &Value) {
    let sync = container(pod, "git-sync");
    let image = sync["image"].as_str().unwrap();
    assert!(
        image.starts_with("registry.k8s.io/git-sync/git-sync:v4."),
        "{layout}: {image}"
    );
    let arg = |flag: &str| {
        sync["args"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.strip_prefix(&format!("--{flag}=")))
            .next()
            .unwrap_or_else(|| panic!("{layout}: git-sync --{flag}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let (root, link) = (arg("root"), arg("link"));
    assert_eq!(
        config["reconciler"]["gitops"]["path"].as_str(),
        Some(&*format!("{root}/{link}")),
        "{layout}: reconciler.gitops.path is git-sync's link"
    );
    let mount = |c: &Value| {
        c["volumeMounts"]
            .as_sequence()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"].as_str() == Some(&root))
            .unwrap_or_else(|| panic!("{layout}: {} mounts {root}", c["name"].as_str().unwrap()))
            .clone()
    };
    let (theirs, ours) = (mount(sync), mount(container(pod, "aggregator")));
    assert_eq!(theirs["name"], ours["name"], "{layout}: one volume");
    assert_eq!(
        ours["readOnly"].as_bool(),
        Some(true),
        "{layout}: read-only"
    );
    assert_ne!(
        theirs["readOnly"].as_bool(),
        Some(true),
        "{layout}: git-sync writes"
    );
}

#[test]
fn the_alerting_keys_component_provides_every_key_the_pod_reads() {
    let component = "deploy/components/alerting-keys/aggregator";
    let scratch = tempfile::tempdir().expect("tempdir");
    // The placeholder env file is the committed example (testkit::kustomize::overlay).
    let docs = documents(&render_text(&overlay(
        scratch.path(),
        "deploy/aggregator",
        &[component],
    )));
    let secret = generated(&docs, "Secret", ALERTING_SECRET);
    let name = secret["metadata"]["name"].as_str().unwrap();
    assert_ne!(name, ALERTING_SECRET, "hashed: a changed key rolls the pod");
    let keys = secret_env(container(aggregator(&docs), "aggregator"));
    assert!(!keys.is_empty());
    for (var, secret_name, key) in keys {
        assert_eq!(secret_name, name, "{var}: the generated Secret");
        assert!(secret["data"][key.as_str()].is_string(), "{var}: key {key}");
    }
    let ignored = std::fs::read_to_string(
        edgewatch_testkit::kustomize::repo_root()
            .join(component)
            .join(".gitignore"),
    )
    .expect(".gitignore");
    assert!(
        ignored.lines().any(|l| l.trim() == "alerting-keys.env"),
        "the filled env file stays out of git"
    );
}

#[test]
fn deployed_collector_and_image_default_configs_validate() {
    let root = edgewatch_testkit::kustomize::repo_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let docs = render("deploy/collector");
    let data = generated(&docs, "ConfigMap", "edgewatch-collector")["data"]
        .as_mapping()
        .expect("collector ConfigMap");
    let path = dir.path().join("collector.yaml");
    write(
        &path,
        &without_trust_keys(data["collector.yaml"].as_str().unwrap()),
    );
    validate("collector", &path, &[]);
    // What the image carries at /etc/edgewatch (Containerfile).
    validate("aggregator", &root.join("image/aggregator.yaml"), &[]);
    validate("collector", &root.join("image/collector.yaml"), &[]);
}
