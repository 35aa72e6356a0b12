//! Stamps the git revision into the binaries (`edgewatch --version`) as
//! `EDGEWATCH_REVISION`: `EDGEWATCH_GIT_REVISION` when set (a build from a tarball or
//! inside a container, where there is no `.git`), else `git rev-parse --short HEAD`
//! with `-dirty` when tracked files differ from HEAD, else `unknown`.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=EDGEWATCH_GIT_REVISION");
    let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".into());
    let revision = match std::env::var("EDGEWATCH_GIT_REVISION") {
        Ok(r) if !r.trim().is_empty() => r.trim().to_string(),
        _ => {
            watch_git(Path::new(&dir));
            git_revision(Path::new(&dir)).unwrap_or_else(|| "unknown".into())
        }
    };
    println!("cargo:rustc-env=EDGEWATCH_REVISION={revision}");
}

/// `git args…` in `dir`: its trimmed stdout when it succeeds.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn git_revision(dir: &Path) -> Option<String> {
    let short = git(dir, &["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(dir, &["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{short}-dirty")
    } else {
        short
    })
}

/// Reruns this script when HEAD moves: HEAD itself (a checkout), the branch it points
/// at (a commit), packed refs, and the index (staging, and `git status` refreshing
/// it). Paths come from git so that worktrees, whose HEAD lives in the main
/// repository's `.git/worktrees/`, work too. An edit not yet staged is noticed at the
/// next index change or when this script reruns for another reason.
fn watch_git(dir: &Path) {
    let mut watched = vec!["HEAD".to_string(), "packed-refs".into(), "index".into()];
    if let Some(branch) = git(dir, &["rev-parse", "--symbolic-full-name", "HEAD"]) {
        if branch.starts_with("refs/") {
            watched.push(branch);
        }
    }
    for name in watched {
        let path = git(
            dir,
            &["rev-parse", "--path-format=absolute", "--git-path", &name],
        );
        // Cargo reruns a script every build while a watched file is missing.
        if let Some(path) = path.filter(|p| Path::new(p).exists()) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
