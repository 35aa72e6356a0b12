//! Desired state from a GitOps checkout in the ai-edge layout.
//!
//! - An **app** is a Kustomize directory whose `kustomization.yaml` has
//!   `commonLabels.model-name` (or `labels[].pairs.model-name`) and an image
//!   pinned by digest in `images[].{name,newName,digest}`; its name is the
//!   directory name. A plain `Deployment` manifest (in a directory without a
//!   kustomization) with a `model-name` label and an `image@sha256:…` counts
//!   too; its name is its `app` label, else `metadata.name`.
//! - **Clusters → apps**: `reconciler.clusters` in the config, else every
//!   `clusters/<cluster>/kustomization.yaml`, whose `resources` are relative
//!   paths to app directories (or plain manifests).
//! - The **revision** is the commit `HEAD` points at, read with `gix`.
//!
//! An unparsable file fails the whole load (the caller keeps the last good
//! state), and so does a symbolic link anywhere in the tree (to a file or a
//! directory: it could point at `/dev/zero` or any file of the host), a YAML file
//! that is not a regular file, or one over [`MAX_FILE_BYTES`]; every other problem (bad digest, duplicate app, unknown app or
//! cluster, remote base) skips only the item concerned. Every problem is an
//! [`Issue`] located as `file:line`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use serde::Deserialize;
use serde_yaml_ng::Value;

/// The largest YAML file read; a bigger one is refused as unreadable.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// One app the GitOps repository wants deployed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DesiredApp {
    pub name: String,
    /// The `model-name` label.
    pub model: String,
    /// The kustomization's (or manifest's) namespace, when it sets one.
    pub namespace: Option<String>,
    /// The image repository (`newName`, else `name`).
    pub image: String,
    /// `sha256:<64 hex>`.
    pub digest: String,
    /// Where it is defined, relative to the repository root.
    pub file: String,
}

/// Everything the repository wants, at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct DesiredState {
    /// The commit id of `HEAD` (`unknown` when it could not be read).
    pub revision: String,
    pub apps: BTreeMap<String, DesiredApp>,
    /// Cluster → app names (each one in `apps`).
    pub clusters: BTreeMap<String, BTreeSet<String>>,
}

/// A problem in the repository, located.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Issue {
    pub file: String,
    /// 1-based; 0 when the problem has no line (a config key, the git dir).
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)
        } else {
            write!(f, "{}: {}", self.file, self.message)
        }
    }
}

/// A successful load: the state and the problems that skipped single items.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub desired: DesiredState,
    pub issues: Vec<Issue>,
}

/// `sha256:` followed by 64 lowercase hex digits.
pub fn valid_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|h| {
        h.len() == 64
            && h.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// Why the commit `HEAD` points at could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RevisionError {
    #[error(transparent)]
    Open(gix::Error),
    #[error(transparent)]
    Head(gix::Error),
}

/// The commit `HEAD` of the repository at `root` points at.
pub fn read_revision(root: &Path) -> Result<String, RevisionError> {
    let repo = gix::open(root).map_err(RevisionError::Open)?;
    let id = repo.head_id().map_err(RevisionError::Head)?;
    Ok(id.to_string())
}

/// What decides whether the repository must be read again: the commit and
/// every YAML file's (path, mtime, size).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    revision: Option<String>,
    files: Vec<(PathBuf, Option<SystemTime>, u64)>,
}

pub fn fingerprint(root: &Path) -> Fingerprint {
    let tree = walk(root);
    // Of the links, the link itself (never what it points at).
    let files = tree
        .files
        .into_iter()
        .chain(tree.refused.into_iter().map(|(p, _)| p))
        .map(|p| {
            let m = std::fs::symlink_metadata(&p).ok();
            let mtime = m.as_ref().and_then(|m| m.modified().ok());
            (p, mtime, m.map(|m| m.len()).unwrap_or(0))
        })
        .collect();
    Fingerprint {
        revision: read_revision(root).ok(),
        files,
    }
}

/// The YAML files of a checkout, and the entries refused (with why).
#[derive(Default)]
struct Tree {
    files: Vec<PathBuf>,
    refused: Vec<(PathBuf, &'static str)>,
}

/// Lists the checkout without following links: a symbolic link (to a file or a
/// directory) is refused, as is a YAML name on anything but a regular file.
fn walk(root: &Path) -> Tree {
    let mut tree = Tree::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            // `DirEntry::file_type` does not follow links.
            let Ok(ft) = e.file_type() else { continue };
            let yaml = name.ends_with(".yaml") || name.ends_with(".yml") || name == "Kustomization";
            if ft.is_symlink() {
                tree.refused
                    .push((e.path(), "symbolic link: not followed in the GitOps tree"));
            } else if ft.is_dir() {
                stack.push(e.path());
            } else if yaml && ft.is_file() {
                tree.files.push(e.path());
            } else if yaml {
                tree.refused.push((e.path(), "not a regular file"));
            }
        }
    }
    tree.files.sort();
    tree.refused.sort();
    tree
}

/// Reads a YAML file: not through a link, nothing but a regular file (a FIFO
/// swapped in after the listing must not block), at most [`MAX_FILE_BYTES`].
fn read_yaml(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{} bytes: over the {MAX_FILE_BYTES} bytes a GitOps file may have",
            meta.len()
        )));
    }
    let mut text = String::new();
    // A file growing after the check is cut, and then fails to parse.
    f.take(MAX_FILE_BYTES).read_to_string(&mut text)?;
    Ok(text)
}

fn is_kustomization(p: &Path) -> bool {
    matches!(
        p.file_name().and_then(|n| n.to_str()),
        Some("kustomization.yaml" | "kustomization.yml" | "Kustomization")
    )
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root)
        .unwrap_or(p)
        .to_string_lossy()
        .replace('\\', "/")
}

/// The 1-based line of the first occurrence of `needle` in `text` (1 if absent).
fn line_of(text: &str, needle: &str) -> usize {
    text.find(needle)
        .map(|i| text[..i].matches('\n').count() + 1)
        .unwrap_or(1)
}

fn is_remote(resource: &str) -> bool {
    resource.contains("://")
        || resource.starts_with("git@")
        || resource.starts_with("github.com/")
        || resource.starts_with("gitlab.com/")
        || resource.contains("?ref=")
        || resource.contains(".git//")
}

/// Lexically normalises a relative path (`a/b/../c` → `a/c`); None if it
/// leaves the repository.
fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop()?;
            }
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out.iter().collect())
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut cur = v;
    for k in path {
        cur = cur.get(*k)?;
    }
    cur.as_str()
}

fn string_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Parses every YAML document of a file; a syntax error is an [`Issue`].
fn parse_docs(root: &Path, path: &Path) -> Result<(String, Vec<Value>), Issue> {
    let file = rel(root, path);
    let text = read_yaml(path).map_err(|e| Issue {
        file: file.clone(),
        line: 0,
        message: e.to_string(),
    })?;
    let mut docs = Vec::new();
    for de in serde_yaml_ng::Deserializer::from_str(&text) {
        match Value::deserialize(de) {
            Ok(v) => docs.push(v),
            Err(e) => {
                let line = e.location().map(|l| l.line()).unwrap_or(1);
                let mut message = e.to_string();
                if let Some(i) = message.rfind(" at line ") {
                    message.truncate(i);
                }
                return Err(Issue {
                    file,
                    line,
                    message: format!("unparsable YAML: {message}"),
                });
            }
        }
    }
    Ok((text, docs))
}

/// Why the desired state could not be read at all: the root is not a
/// directory, or some files are unparsable (every one of them is listed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .issues.iter().map(Issue::to_string).collect::<Vec<_>>().join("; "))]
pub struct LoadError {
    pub issues: Vec<Issue>,
}

/// Reads the desired state. `Err` when a file cannot be parsed at all (the
/// caller keeps the last good state); the issues then include every
/// unparsable file.
pub fn load(
    root: &Path,
    config_clusters: Option<&BTreeMap<String, Vec<String>>>,
) -> Result<Loaded, LoadError> {
    if !root.is_dir() {
        return Err(LoadError {
            issues: vec![Issue {
                file: root.display().to_string(),
                line: 0,
                message: "GitOps path is not a directory".into(),
            }],
        });
    }
    let mut found = Found::default();
    let revision = match read_revision(root) {
        Ok(r) => r,
        Err(e) => {
            found.issue(".git", 0, format!("reading the current commit: {e}"));
            "unknown".into()
        }
    };
    let parsed = parse_all(root)?;
    let kustomized_dirs: BTreeSet<&Path> = parsed
        .iter()
        .filter(|f| is_kustomization(&f.path))
        .filter_map(|f| f.path.parent())
        .collect();
    for f in &parsed {
        if is_kustomization(&f.path) {
            found.read_kustomization(root, f);
        } else if !f.path.parent().is_some_and(|d| kustomized_dirs.contains(d)) {
            // A file next to a kustomization is one of its resources, not an app.
            found.read_manifests(root, f);
        }
    }
    let clusters = match config_clusters {
        Some(cfg) => found.clusters_from_config(cfg),
        None => found.clusters_from_repo(),
    };
    Ok(Loaded {
        desired: DesiredState {
            revision,
            apps: found.apps,
            clusters,
        },
        issues: found.issues,
    })
}

/// One YAML file of the checkout, parsed.
struct ParsedFile {
    path: PathBuf,
    text: String,
    docs: Vec<Value>,
}

/// Every YAML file of the checkout, or every unparsable one.
fn parse_all(root: &Path) -> Result<Vec<ParsedFile>, LoadError> {
    let mut parsed = Vec::new();
    let tree = walk(root);
    let mut broken: Vec<Issue> = tree
        .refused
        .iter()
        .map(|(path, why)| Issue {
            file: rel(root, path),
            line: 0,
            message: (*why).to_string(),
        })
        .collect();
    for path in tree.files {
        match parse_docs(root, &path) {
            Ok((text, docs)) => parsed.push(ParsedFile { path, text, docs }),
            Err(i) => broken.push(i),
        }
    }
    if broken.is_empty() {
        Ok(parsed)
    } else {
        Err(LoadError { issues: broken })
    }
}

/// A `clusters/<cluster>/kustomization.yaml`.
struct ClusterFile {
    file: String,
    text: String,
    resources: Vec<String>,
}

/// What the files define so far, and the problems met.
#[derive(Default)]
struct Found {
    apps: BTreeMap<String, DesiredApp>,
    /// Relative path (dir of an app kustomization, or a manifest file) → app.
    app_paths: BTreeMap<PathBuf, String>,
    repo_clusters: BTreeMap<String, ClusterFile>,
    issues: Vec<Issue>,
}

impl Found {
    fn issue(&mut self, file: &str, line: usize, message: String) {
        self.issues.push(Issue {
            file: file.to_owned(),
            line,
            message,
        });
    }

    /// Adds an app unless one of the same name exists (then an issue at `line`).
    fn add_app(&mut self, app: DesiredApp, path: PathBuf, line: usize) {
        if let Some(first) = self.apps.get(&app.name) {
            let message = format!(
                "duplicate app name {:?} (first defined in {}); ignored",
                app.name, first.file
            );
            self.issue(&app.file, line, message);
            return;
        }
        self.app_paths.insert(path, app.name.clone());
        self.apps.insert(app.name.clone(), app);
    }

    /// A kustomization is a cluster (`clusters/<c>/`), an app (it has a
    /// `model-name` label), or neither.
    fn read_kustomization(&mut self, root: &Path, f: &ParsedFile) {
        let file = rel(root, &f.path);
        let Some(k) = f.docs.first() else { return };
        let mut resources = string_list(k.get("resources"));
        resources.extend(string_list(k.get("bases")));
        for r in resources.iter().filter(|r| is_remote(r)) {
            let line = line_of(&f.text, r);
            self.issue(&file, line, format!("remote base {r:?} is not followed"));
        }
        let dir = Path::new(&file)
            .parent()
            .unwrap_or(Path::new(""))
            .to_path_buf();
        let comps: Vec<String> = dir
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if comps.len() == 2 && comps[0] == "clusters" {
            let cluster = ClusterFile {
                file,
                text: f.text.clone(),
                resources,
            };
            self.repo_clusters.insert(comps[1].clone(), cluster);
            return;
        }
        let Some(model) = kustomization_model(k) else {
            return;
        };
        let name = comps.last().cloned().unwrap_or_else(|| "root".into());
        let Some((image, digest)) = self.kustomization_image(k, &file, &f.text, &name) else {
            return;
        };
        let app = DesiredApp {
            name,
            model,
            namespace: k
                .get("namespace")
                .and_then(Value::as_str)
                .map(str::to_owned),
            image,
            digest,
            file,
        };
        self.add_app(app, dir, 1);
    }

    /// The first `images[]` entry pinned by a valid digest: (repository, digest).
    fn kustomization_image(
        &mut self,
        k: &Value,
        file: &str,
        text: &str,
        name: &str,
    ) -> Option<(String, String)> {
        let mut chosen = None;
        for img in k
            .get("images")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let iname = img.get("name").and_then(Value::as_str).unwrap_or("");
            let repo = img.get("newName").and_then(Value::as_str).unwrap_or(iname);
            match img.get("digest").and_then(Value::as_str) {
                Some(d) if valid_digest(d) => {
                    chosen.get_or_insert_with(|| (repo.to_owned(), d.to_owned()));
                }
                Some(d) => self.issue(
                    file,
                    line_of(text, d),
                    format!(
                        "app {name}: image {iname}: digest {d:?} is not sha256:<64 lowercase hex>"
                    ),
                ),
                None => {}
            }
        }
        if chosen.is_none() {
            let message = format!("app {name}: no image pinned by a valid digest; ignored");
            self.issue(file, line_of(text, "images"), message);
        }
        chosen
    }

    /// Every `Deployment` with a `model-name` label in a plain manifest file.
    fn read_manifests(&mut self, root: &Path, f: &ParsedFile) {
        let file = rel(root, &f.path);
        for doc in &f.docs {
            if doc.get("kind").and_then(Value::as_str) != Some("Deployment") {
                continue;
            }
            let label = |base: &[&str]| {
                let mut p = base.to_vec();
                p.push("model-name");
                str_at(doc, &p).map(str::to_owned)
            };
            let Some(model) = label(&["metadata", "labels"])
                .or_else(|| label(&["spec", "template", "metadata", "labels"]))
            else {
                continue;
            };
            let dname = str_at(doc, &["metadata", "name"]).unwrap_or("deployment");
            let name = str_at(doc, &["metadata", "labels", "app"])
                .unwrap_or(dname)
                .to_owned();
            let Some((image, digest)) = self.container_image(doc, &file, &f.text, &name, dname)
            else {
                continue;
            };
            let app = DesiredApp {
                name: name.clone(),
                model,
                namespace: str_at(doc, &["metadata", "namespace"]).map(str::to_owned),
                image,
                digest,
                file: file.clone(),
            };
            self.add_app(app, PathBuf::from(&file), line_of(&f.text, &name));
        }
    }

    /// The first container image pinned by a valid digest (`repo@sha256:…`).
    fn container_image(
        &mut self,
        doc: &Value,
        file: &str,
        text: &str,
        name: &str,
        dname: &str,
    ) -> Option<(String, String)> {
        let containers = doc
            .get("spec")
            .and_then(|s| s.get("template"))
            .and_then(|t| t.get("spec"))
            .and_then(|s| s.get("containers"))
            .and_then(Value::as_sequence);
        let mut chosen = None;
        for c in containers.into_iter().flatten() {
            let Some(img) = c.get("image").and_then(Value::as_str) else {
                continue;
            };
            let Some((repo, d)) = img.split_once('@') else {
                continue;
            };
            if valid_digest(d) {
                chosen.get_or_insert((repo.to_owned(), d.to_owned()));
            } else {
                let message = format!("app {name}: digest {d:?} is not sha256:<64 lowercase hex>");
                self.issue(file, line_of(text, img), message);
            }
        }
        if chosen.is_none() {
            let message = format!("app {name}: no image pinned by a valid digest; ignored");
            self.issue(file, line_of(text, dname), message);
        }
        chosen
    }

    /// Clusters → apps from `reconciler.clusters`; the repository's cluster
    /// files are then ignored (each one an issue).
    fn clusters_from_config(
        &mut self,
        cfg: &BTreeMap<String, Vec<String>>,
    ) -> BTreeMap<String, BTreeSet<String>> {
        let mut clusters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (cluster, names) in cfg {
            let set = clusters.entry(cluster.clone()).or_default();
            for n in names {
                if self.apps.contains_key(n) {
                    set.insert(n.clone());
                } else {
                    self.issues.push(Issue {
                        file: format!("config reconciler.clusters.{cluster}"),
                        line: 0,
                        message: format!("unknown app {n:?} (not in the GitOps repository)"),
                    });
                }
            }
        }
        for (cluster, cf) in &self.repo_clusters {
            if !cfg.contains_key(cluster) {
                self.issues.push(Issue {
                    file: cf.file.clone(),
                    line: 1,
                    message: format!(
                        "unknown cluster {cluster:?} (not in reconciler.clusters); ignored"
                    ),
                });
            }
        }
        clusters
    }

    /// Clusters → apps from `clusters/<cluster>/kustomization.yaml` resources.
    fn clusters_from_repo(&mut self) -> BTreeMap<String, BTreeSet<String>> {
        let mut clusters: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (cluster, cf) in &self.repo_clusters {
            let set = clusters.entry(cluster.clone()).or_default();
            let base = Path::new("clusters").join(cluster);
            // Remote bases were reported with the kustomization.
            for r in cf.resources.iter().filter(|r| !is_remote(r)) {
                let target = normalize(&base.join(r));
                match target.as_ref().and_then(|t| self.app_paths.get(t)) {
                    Some(app) => {
                        set.insert(app.clone());
                    }
                    None => self.issues.push(Issue {
                        file: cf.file.clone(),
                        line: line_of(&cf.text, r),
                        message: format!("resource {r:?} is not an app of this repository"),
                    }),
                }
            }
        }
        clusters
    }
}

/// An app kustomization's `model-name`: `commonLabels`, else `labels[].pairs`.
fn kustomization_model(k: &Value) -> Option<String> {
    str_at(k, &["commonLabels", "model-name"])
        .map(str::to_owned)
        .or_else(|| {
            k.get("labels")?.as_sequence()?.iter().find_map(|l| {
                l.get("pairs")?
                    .get("model-name")?
                    .as_str()
                    .map(str::to_owned)
            })
        })
}

/// A GitOps checkout watched for changes: keeps the last good state.
#[derive(Debug)]
pub struct Source {
    root: PathBuf,
    config_clusters: Option<BTreeMap<String, Vec<String>>>,
    seen: Option<Fingerprint>,
    /// The last good desired state (None until one loaded).
    pub desired: Option<DesiredState>,
    /// The problems of the latest load (also when it failed).
    pub issues: Vec<Issue>,
    /// Whether the latest load failed (so `desired` is older than the checkout).
    pub stale: bool,
}

impl Source {
    pub fn new(root: PathBuf, config_clusters: Option<BTreeMap<String, Vec<String>>>) -> Self {
        Source {
            root,
            config_clusters,
            seen: None,
            desired: None,
            issues: Vec::new(),
            stale: false,
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn config_clusters(&self) -> Option<&BTreeMap<String, Vec<String>>> {
        self.config_clusters.as_ref()
    }

    /// Reads the checkout again if its commit or files changed. True when
    /// something was (re)read.
    pub fn poll(&mut self) -> bool {
        let fp = fingerprint(&self.root);
        if self.seen.as_ref() == Some(&fp) {
            return false;
        }
        self.seen = Some(fp);
        match load(&self.root, self.config_clusters.as_ref()) {
            Ok(l) => {
                for i in &l.issues {
                    tracing::warn!(issue = %i, "problem in the GitOps repository; item skipped");
                }
                self.desired = Some(l.desired);
                self.issues = l.issues;
                self.stale = false;
            }
            Err(e) => {
                for i in &e.issues {
                    tracing::warn!(issue = %i, "unreadable GitOps repository; keeping the last good desired state");
                }
                self.issues = e.issues;
                self.stale = true;
            }
        }
        true
    }
}
