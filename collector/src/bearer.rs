//! The forwarder's bearer token (`forward.bearer_token_file`), read again when the
//! file changes: a projected service-account token or a Secret volume is replaced
//! in place (kubelet swaps a symlink), and the collector must follow without a
//! restart. The file's metadata is checked before each export (one `stat`, far
//! cheaper than the export); a file that became unreadable or empty keeps the last
//! good token, with a warning.

use edgewatch_config::auth::{read_token_file, TokenFileError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// What tells a changed file: its modification time, size and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        inode: m.ino(),
    })
}

pub struct BearerToken {
    path: PathBuf,
    current: Mutex<Current>,
}

struct Current {
    /// `Bearer <token>`.
    header: Arc<str>,
    stamp: Option<Stamp>,
}

impl BearerToken {
    /// Reads the token now: a file that cannot be used fails the start.
    pub fn open(path: &Path) -> Result<BearerToken, TokenFileError> {
        let stamp = stamp(path);
        let token = read_token_file(path)?;
        Ok(BearerToken {
            path: path.to_path_buf(),
            current: Mutex::new(Current {
                header: format!("Bearer {}", token.as_str()).into(),
                stamp,
            }),
        })
    }

    /// The `Authorization` header value, from the file as it is now.
    pub fn header(&self) -> Arc<str> {
        let now = stamp(&self.path);
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if now.is_some() && now != cur.stamp {
            cur.stamp = now;
            match read_token_file(&self.path) {
                Ok(t) => {
                    cur.header = format!("Bearer {}", t.as_str()).into();
                    tracing::info!(path = %self.path.display(), "bearer token re-read");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "bearer token file changed but cannot be used; sending the previous token")
                }
            }
        }
        cur.header.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_file_and_keeps_the_last_good_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "one\n").unwrap();
        let t = BearerToken::open(&path).unwrap();
        assert_eq!(&*t.header(), "Bearer one");
        // Replaced as kubelet does: a new file renamed over the old one.
        let next = dir.path().join("token.new");
        std::fs::write(&next, "two-and-longer\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(&*t.header(), "Bearer two-and-longer");
        std::fs::write(&next, "\n").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_eq!(
            &*t.header(),
            "Bearer two-and-longer",
            "an empty file is not a token"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(&*t.header(), "Bearer two-and-longer");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(&*t.header(), "Bearer three");
        std::fs::write(&path, "").unwrap();
        assert!(BearerToken::open(&path).is_err());
    }
}
