//! The GitOps repository reader on YAML it did not write. The input is up to
//! three files separated by NUL bytes: an app's `kustomization.yaml`, a
//! manifest beside the base, and a cluster's `kustomization.yaml`; they are
//! written into a scratch repository which is then loaded.
//!
//! Invariants: loading is deterministic; every app has a valid digest and a
//! name; every cluster lists only known apps; every issue names a file of the
//! repository.
#![no_main]

use edgewatch_aggregator::reconcile::gitops::{load, valid_digest};
use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;
use std::sync::OnceLock;

const FILES: [&str; 3] = [
    "apps/app/kustomization.yaml",
    "base/deployment.yaml",
    "clusters/edge-a/kustomization.yaml",
];

fn root() -> &'static PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let dir = tempfile::tempdir().expect("scratch dir").keep();
        for f in FILES {
            std::fs::create_dir_all(dir.join(f).parent().unwrap()).unwrap();
        }
        std::fs::write(
            dir.join("base/kustomization.yaml"),
            "resources:\n- deployment.yaml\n",
        )
        .unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let root = root();
    let mut parts = data.splitn(3, |&b| b == 0);
    for f in FILES {
        let path = root.join(f);
        match parts.next() {
            Some(p) => std::fs::write(&path, p).unwrap(),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let first = load(root, None);
    let second = load(root, None);
    match (&first, &second) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a.desired, b.desired);
            assert_eq!(a.issues, b.issues);
            for (name, app) in &a.desired.apps {
                assert_eq!(name, &app.name);
                assert!(!name.is_empty());
                assert!(valid_digest(&app.digest), "{app:?}");
            }
            for (cluster, apps) in &a.desired.clusters {
                for app in apps {
                    assert!(
                        a.desired.apps.contains_key(app),
                        "{cluster} lists unknown {app}"
                    );
                }
            }
            for i in &a.issues {
                assert!(
                    i.file == ".git"
                        || FILES.contains(&i.file.as_str())
                        || i.file.starts_with("base/"),
                    "{i}"
                );
            }
        }
        (Err(a), Err(b)) => assert_eq!(a, b),
        _ => panic!("loading twice disagrees"),
    }
});
