//! Every configuration example in README.md is valid: collector and aggregator YAML
//! through `edgewatch validate`, the Prometheus scrape configuration through
//! `promtool check config`.

use edgewatch_testkit::peers::promtool_check_config;
use edgewatch_testkit::trust_keys::without_trust_keys;
use edgewatch_testkit::write;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_edgewatch");
const README: &str = include_str!("../README.md");

/// The body of every ```yaml fenced block, in order; a block indented under a list item
/// loses its fence's indentation.
fn yaml_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for line in markdown.lines() {
        let indent = line.len() - line.trim_start().len();
        match (&mut current, line.trim()) {
            (None, "```yaml") => current = Some((indent, String::new())),
            (Some(_), "```") => blocks.push(current.take().expect("open block").1),
            (Some((fence, block)), _) => {
                block.push_str(line.get(*fence..).unwrap_or_default());
                block.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "README.md has an unclosed ```yaml block");
    blocks
}

#[derive(Debug, PartialEq)]
enum Kind {
    Collector,
    Aggregator,
    Prometheus,
    Kustomization,
}

/// A collector config names its cluster; a Prometheus one has scrape_configs; a
/// Kustomization is one; every other example configures the aggregator (whole, or a few
/// sections of it).
fn kind(block: &str) -> Kind {
    if block.starts_with("cluster:") {
        Kind::Collector
    } else if block.starts_with("scrape_configs:") {
        Kind::Prometheus
    } else if block.starts_with("apiVersion: kustomize.config.k8s.io/") {
        Kind::Kustomization
    } else {
        Kind::Aggregator
    }
}

/// Top-level sections of a YAML document: each key line with the lines under it.
fn sections(yaml: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in yaml.lines() {
        let top = !line.starts_with([' ', '#']) && !line.trim().is_empty();
        match line.split_once(':') {
            Some((key, _)) if top => out.push((key.to_string(), String::new())),
            _ => {}
        }
        if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

/// `base` with `part`'s sections replacing or added to its own: an example that shows
/// only some sections is checked inside the README's whole aggregator example.
fn complete(base: &str, part: &str) -> String {
    let mut merged = sections(base);
    for (key, text) in sections(part) {
        match merged.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = text,
            None => merged.push((key, text)),
        }
    }
    merged.into_iter().map(|(_, text)| text).collect()
}

/// `text` with the path of every `token_file:` / `bearer_token_file:` replaced by a
/// file under `dir` holding a token of its own (validation reads token files).
fn with_token_files(text: &str, dir: &std::path::Path) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let key_end = line.find("token_file: ").map(|i| i + "token_file: ".len());
        match key_end {
            Some(end) => {
                let original = line[end..].split_whitespace().next().unwrap_or("");
                let file = dir.join(original.replace('/', "_"));
                write(&file, &format!("token-for-{original}\n"));
                out.push_str(&line[..end]);
                out.push_str(&file.display().to_string());
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A README kustomization lives beside a checkout of this repository, `../edgewatch/`:
/// each of its resources and components names a directory of that checkout.
fn kustomization_paths_exist(block: &str) -> Result<(), String> {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(block).map_err(|e| e.to_string())?;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for list in ["resources", "components"] {
        for path in doc[list].as_sequence().into_iter().flatten() {
            let path = path.as_str().unwrap_or_default();
            let found = path
                .strip_prefix("../edgewatch/")
                .is_some_and(|rel| root.join(rel).join("kustomization.yaml").is_file());
            if !found {
                missing.push(path.to_string());
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("not in this repository: {missing:?}"))
    }
}

fn validate(role: &str, file: &std::path::Path) -> Result<(), String> {
    let out = Command::new(BIN)
        .args(["validate", role])
        .arg(file)
        // The alerting example reads its Dynatrace token from the environment.
        .env("DT_API_TOKEN", "dt0c01.README.EXAMPLE")
        .output()
        .expect("run edgewatch validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    if out.status.success() && stdout.trim() == "ok" {
        Ok(())
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

#[test]
fn every_readme_config_example_is_valid() {
    let blocks = yaml_blocks(README);
    let kinds: Vec<Kind> = blocks.iter().map(|b| kind(b)).collect();
    for k in [Kind::Collector, Kind::Aggregator, Kind::Prometheus] {
        assert!(kinds.contains(&k), "README.md has no {k:?} example");
    }
    let whole_aggregator = blocks
        .iter()
        .find(|b| kind(b) == Kind::Aggregator && b.contains("\nhttp:"))
        .expect("README.md has a whole aggregator example");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut failures = Vec::new();
    for (i, (block, kind)) in blocks.iter().zip(&kinds).enumerate() {
        let file = dir.path().join(format!("readme-{i}.yaml"));
        // The TLS and auth keys are checked once the config crate knows them.
        let text = match kind {
            Kind::Aggregator => without_trust_keys(&complete(whole_aggregator, block)),
            Kind::Collector => without_trust_keys(block),
            _ => block.clone(),
        };
        write(&file, &with_token_files(&text, dir.path()));
        let verdict = match kind {
            Kind::Collector => validate("collector", &file),
            Kind::Aggregator => validate("aggregator", &file),
            Kind::Prometheus => promtool_check_config(&file),
            Kind::Kustomization => kustomization_paths_exist(block),
        };
        if let Err(e) = verdict {
            failures.push(format!("block {i} ({kind:?}):\n{block}\n→ {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
