//! The demo's GitOps repository: a real git repository laid out like the ai-edge
//! project (Kustomize apps pinned by digest, clusters listing their apps), and the
//! "PR merge" that bumps one app's digest. Created with the `git` CLI, as a pipeline
//! would; the aggregator reads it with its git library.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;

/// An app of the demo repository.
pub struct App {
    pub name: &'static str,
    pub model: &'static str,
}

pub const APPS: [App; 2] = [
    App {
        name: "tensorflow-housing-app",
        model: "tensorflow-housing",
    },
    App {
        name: "bike-rental-app",
        model: "bike-rental",
    },
];

/// Cluster → apps it should run. `edge-c` has no collector in the demo: it stays
/// offline (Unknown).
pub const CLUSTERS: [(&str, &[&str]); 3] = [
    ("edge-a", &["tensorflow-housing-app", "bike-rental-app"]),
    ("edge-b", &["tensorflow-housing-app", "bike-rental-app"]),
    ("edge-c", &["tensorflow-housing-app"]),
];

/// A deterministic `sha256:` digest for (model, build).
pub fn digest(model: &str, build: u32) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in model.bytes().chain(build.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!(
        "sha256:{:016x}{:016x}{:016x}{:016x}",
        h,
        h.rotate_left(17),
        h.rotate_left(31),
        h.rotate_left(47)
    )
}

fn kustomization(app: &App, digest: &str) -> String {
    format!(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {name}\nnamePrefix: {model}-\ncommonLabels:\n  app: {name}-1\n  model-name: {model}\nresources:\n- ../../base\nimages:\n- name: edge-model-template-image\n  newName: quay.io/rhoai-edge/{model}\n  digest: {digest}\n",
        name = app.name,
        model = app.model
    )
}

fn write(root: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    if let Some(dir) = p.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
}

fn git(root: &Path, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args([
            "-c",
            "user.name=edge pipeline",
            "-c",
            "user.email=pipeline@edgewatch.local",
        ])
        .args(args)
        .output()
        .context("running git (the demo's GitOps repository needs the git CLI)")?;
    if !out.status.success() {
        bail!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Creates the repository with build 1 of every app.
pub fn init(root: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)?;
    git(root, &["init", "-q", "-b", "main"])?;
    write(
        root,
        "acm/odh-edge/base/kustomization.yaml",
        "resources:\n- deployment.yaml\n",
    )?;
    write(
        root,
        "acm/odh-edge/base/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: model-1\nspec:\n  progressDeadlineSeconds: 600\n  template:\n    spec:\n      containers:\n      - name: model\n        image: edge-model-template-image\n",
    )?;
    for app in &APPS {
        write(
            root,
            &format!("acm/odh-edge/apps/{}/kustomization.yaml", app.name),
            &kustomization(app, &digest(app.model, 1)),
        )?;
    }
    for (cluster, apps) in CLUSTERS {
        let resources: String = apps
            .iter()
            .map(|a| format!("- ../../acm/odh-edge/apps/{a}\n"))
            .collect();
        write(
            root,
            &format!("clusters/{cluster}/kustomization.yaml"),
            &format!("resources:\n{resources}"),
        )?;
    }
    git(root, &["add", "-A"])?;
    git(root, &["commit", "-q", "-m", "Initial edge deployments"])
}

/// The "PR merge": pins `build` of `app`'s image. The commit is made before the
/// working tree changes (as a checkout that fetches and then updates does), so a
/// reader never sees the new digest under the old revision.
pub fn bump(root: &Path, app: &App, build: u32) -> anyhow::Result<()> {
    let rel = format!("acm/odh-edge/apps/{}/kustomization.yaml", app.name);
    let text = kustomization(app, &digest(app.model, build));
    let out = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["hash-object", "-w", "--stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(text.as_bytes())?;
            }
            child.wait_with_output()
        })
        .context("running git hash-object")?;
    let blob = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || blob.is_empty() {
        bail!(
            "git hash-object failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    git(
        root,
        &[
            "update-index",
            "--cacheinfo",
            &format!("100644,{blob},{rel}"),
        ],
    )?;
    git(
        root,
        &[
            "commit",
            "-q",
            "-m",
            &format!("Merge pull request #{build}: {} build {build}", app.model),
        ],
    )?;
    write(root, &rel, &text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn digests_are_sha256_shaped_and_differ_by_build() {
        let a = super::digest("m", 1);
        assert!(
            a.starts_with("sha256:")
                && a.len() == 71
                && a[7..].chars().all(|c| c.is_ascii_hexdigit())
        );
        assert_ne!(a, super::digest("m", 2));
    }
}
