//! The Kustomize layouts under `deploy/`, rendered with `kubectl kustomize` as a cluster
//! would receive them, and checked with `kubernetes-validate` (strict) where asked.
//!
//! Components (`deploy/components/...`) only render inside a kustomization that uses
//! them: [`overlay`] writes one in a test's directory. A component that generates a
//! Secret from files (certificates, tokens: never in git) is copied there first, with
//! a placeholder for each file its `secretGenerator` names.

use serde_yaml_ng::Value;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// The repository's root (this crate lives in `testkit/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ has a parent")
        .to_path_buf()
}

/// Every directory under `deploy/` whose `kustomization.yaml` is of `kind` (`Kustomization`
/// or `Component`), relative to the repository's root, sorted.
pub fn layouts(kind: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![repo_root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().is_some_and(|n| n == "kustomization.yaml")
                && yaml_file(&path)["kind"].as_str() == Some(kind)
            {
                let rel = dir.strip_prefix(repo_root()).expect("under the repository");
                found.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// The YAML document in `path`.
pub fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents `kubectl kustomize` renders for `dir` (relative to the repository's root,
/// or absolute).
pub fn render(dir: impl AsRef<Path>) -> Vec<Value> {
    let text = render_text(&repo_root().join(dir));
    documents(&text)
}

/// `kubectl kustomize dir`'s output.
pub fn render_text(dir: &Path) -> String {
    let out = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("kubectl is installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "kubectl kustomize {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The YAML documents of a multi-document stream.
pub fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("yaml document"))
        .collect()
}

/// Writes into `dir` a kustomization of `base` with `components` (all relative to the
/// repository's root); components that generate Secrets from files are copied into
/// `dir` with placeholder files. Returns `dir`, ready for [`render`].
pub fn overlay(dir: &Path, base: &str, components: &[&str]) -> PathBuf {
    let to_repo = relative_to_repo(dir);
    let mut listed = Vec::new();
    for (i, component) in components.iter().enumerate() {
        let source = repo_root().join(component);
        if generated_files(&source).is_empty() {
            listed.push(format!("{to_repo}/{component}"));
        } else {
            let copy = format!("component-{i}");
            copy_with_placeholders(&source, &dir.join(&copy));
            listed.push(copy);
        }
    }
    let kustomization = format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [{to_repo}/{base}]\ncomponents: [{}]\n",
        listed.join(", ")
    );
    crate::write(&dir.join("kustomization.yaml"), &kustomization);
    dir.to_path_buf()
}

/// `../..` from `dir` up to `/`, then down to the repository: Kustomize refuses absolute
/// paths in `resources` and `components`.
fn relative_to_repo(dir: &Path) -> String {
    let dir = dir.canonicalize().expect("overlay directory exists");
    let root = repo_root().canonicalize().expect("repository root");
    let up = dir
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .map(|_| "..")
        .collect::<Vec<_>>()
        .join("/");
    format!("{up}{}", root.display())
}

/// The files a component's `secretGenerator` reads: `files` (`key=path` or `path`) and
/// `envs` (env files, `KEY=value` lines).
fn generated_files(component: &Path) -> Vec<String> {
    let kustomization = yaml_file(&component.join("kustomization.yaml"));
    let generators = kustomization["secretGenerator"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    generators
        .iter()
        .flat_map(|g| {
            let files = g["files"].as_sequence().cloned().unwrap_or_default();
            files
                .into_iter()
                .chain(g["envs"].as_sequence().cloned().unwrap_or_default())
        })
        .filter_map(|f| {
            f.as_str()
                .map(|s| s.rsplit('=').next().unwrap_or(s).to_string())
        })
        .collect()
}

/// What a placeholder for `file` holds: an env file's committed `FILE.example` (the keys
/// the pod expects), any other file a line naming it.
fn placeholder(component: &Path, file: &str) -> String {
    std::fs::read_to_string(component.join(format!("{file}.example")))
        .unwrap_or_else(|_| format!("placeholder for {file}\n"))
}

fn copy_with_placeholders(source: &Path, target: &Path) {
    std::fs::create_dir_all(target).expect("component copy directory");
    for entry in std::fs::read_dir(source).expect("component directory") {
        let path = entry.expect("directory entry").path();
        if path.is_file() {
            std::fs::copy(&path, target.join(path.file_name().unwrap())).expect("copying");
        }
    }
    for file in generated_files(source) {
        let path = target.join(&file);
        std::fs::create_dir_all(path.parent().unwrap()).expect("placeholder directory");
        crate::write(&path, &placeholder(source, &file));
    }
}

/// Validates rendered manifests with `kubernetes-validate --strict` (unknown fields are
/// errors; kinds without a schema, such as cert-manager's, are only warned about). The
/// program is `$KUBERNETES_VALIDATE` (scripts/test installs it in a venv) or on `PATH`.
pub fn validate_strict(name: &str, manifests: &str, scratch: &Path) {
    let program =
        std::env::var("KUBERNETES_VALIDATE").unwrap_or_else(|_| "kubernetes-validate".into());
    let file = scratch.join(format!("{}.yaml", name.replace('/', "_")));
    crate::write(&file, manifests);
    let out = Command::new(&program)
        .args(["--strict", "--quiet"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| {
            panic!("{program}: {e} (scripts/test installs kubernetes-validate and sets KUBERNETES_VALIDATE)")
        });
    assert!(
        out.status.success(),
        "kubernetes-validate --strict {name}:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The documents of `kind`.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

/// A sequence of strings (empty when `v` is not one).
pub fn strs(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default()
}

/// `field` of every element of the sequence `v`, where it is a string.
pub fn strs_at<'a>(v: &'a Value, field: impl Fn(&'a Value) -> &'a Value) -> Vec<&'a str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(|x| field(x).as_str()).collect())
        .unwrap_or_default()
}

/// The one object of `kind` that `name` became: `name` itself, or `name-<hash>` when a
/// generator (configMapGenerator, secretGenerator) made it. Panics unless there is
/// exactly one (a generator with `behavior: replace` must not leave two).
pub fn generated<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = of_kind(docs, kind)
        .into_iter()
        .filter(|d| {
            let rendered = d["metadata"]["name"].as_str().unwrap_or_default();
            rendered == name
                || rendered
                    .strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix('-'))
                    .is_some_and(|hash| hash.len() == 10 && !hash.contains('-'))
        })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {kind} {name} (or {name}-<hash>) rendered"
    );
    found[0]
}
