//! Credentials in the configuration: the aggregator's `auth.clusters` (a bearer token
//! per cluster, read from a file), `http.basic_auth_users` (bcrypt hashes) and the
//! collector's `forward.bearer_token_file`.
//!
//! Tokens are read while the configuration is read, so a missing, empty or duplicated
//! token is an error at `FILE:LINE:COL` naming the token file. No type here prints a
//! token: their `Debug` shows `<secret>`.

use crate::{ConfigPath, Name};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A bearer token. Never printed: `Debug` shows `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("token file {path} is empty")]
    Empty { path: String },
    #[error(
        "token file {path}: a token is one line of visible ASCII without spaces (it goes into an Authorization header)"
    )]
    Malformed { path: String },
}

/// Reads a token file: surrounding whitespace (a trailing newline) is trimmed; an
/// empty file, or one whose token an HTTP header cannot carry, is an error.
pub fn read_token_file(path: &Path) -> Result<Token, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Read {
        path: path.display().to_string(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.display().to_string(),
        });
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(TokenFileError::Malformed {
            path: path.display().to_string(),
        });
    }
    Ok(Token(token.to_string()))
}

/// A token file that held a usable token when the configuration was read (its
/// holder reads it again when it changes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenFile(pub ConfigPath);

impl<'de> Deserialize<'de> for TokenFile {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let path = ConfigPath::deserialize(d)?;
        read_token_file(&path).map_err(de::Error::custom)?;
        Ok(TokenFile(path))
    }
}

/// `auth:` of the aggregator.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Who may send, and as which cluster. With a client CA on the OTLP receiver,
    /// also the clusters whose certificates are accepted.
    #[serde(default)]
    pub clusters: ClusterTokens,
}

/// The clusters of `auth.clusters`, each cluster and each token at most once.
#[derive(Debug, Clone, Default)]
pub struct ClusterTokens(pub Vec<ClusterToken>);

/// One entry of `auth.clusters`.
#[derive(Debug, Clone)]
pub struct ClusterToken {
    pub cluster: String,
    pub token_file: ConfigPath,
    /// The file's token, read when the configuration was read.
    pub token: Token,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClusterToken {
    cluster: Name,
    token_file: ConfigPath,
}

impl<'de> Deserialize<'de> for ClusterTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = ClusterTokens;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of {cluster, token_file}")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClusterTokens, A::Error> {
                let mut out: Vec<ClusterToken> = Vec::new();
                while let Some(c) = seq.next_element_seed(Unique(&out))? {
                    out.push(c);
                }
                Ok(ClusterTokens(out))
            }
        }
        d.deserialize_seq(List)
    }
}

/// Deserialises one entry, checked against the entries before it (inside the
/// entry, so that an error is located at the entry).
struct Unique<'a>(&'a [ClusterToken]);

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ClusterToken;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ClusterToken, D::Error> {
        let raw = RawClusterToken::deserialize(d)?;
        let token = read_token_file(&raw.token_file).map_err(de::Error::custom)?;
        let cluster = raw.cluster.0;
        for before in self.0 {
            if before.cluster == cluster {
                return Err(de::Error::custom(format!(
                    "cluster {cluster:?} is listed twice (token files {} and {})",
                    before.token_file.display(),
                    raw.token_file.display()
                )));
            }
            if before.token == token {
                return Err(de::Error::custom(format!(
                    "token file {} holds the same token as {} (cluster {:?}): each cluster needs its own",
                    raw.token_file.display(),
                    before.token_file.display(),
                    before.cluster
                )));
            }
        }
        Ok(ClusterToken {
            cluster,
            token_file: raw.token_file,
            token,
        })
    }
}

/// A bcrypt hash of `basic_auth_users`, checked when the configuration is read.
#[derive(Clone, PartialEq, Eq)]
pub struct BcryptHash(pub String);

impl fmt::Debug for BcryptHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<bcrypt hash>")
    }
}

impl<'de> Deserialize<'de> for BcryptHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<bcrypt::HashParts>().map_err(|e| {
            de::Error::custom(format!(
                "not a bcrypt hash ({e}); create one with `htpasswd -nbBC 10 USER PASSWORD`"
            ))
        })?;
        Ok(BcryptHash(s))
    }
}

/// `basic_auth_users`: user name → bcrypt hash of the password.
pub type BasicAuthUsers = BTreeMap<String, BcryptHash>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConfigError;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        #[serde(default)]
        auth: AuthConfig,
        #[serde(default)]
        users: BasicAuthUsers,
        #[serde(default)]
        token_file: Option<TokenFile>,
    }

    fn parse(text: &str) -> Result<Doc, String> {
        crate::parse::<Doc>(text, "cfg.yaml").map_err(|e| match e {
            e @ ConfigError::Invalid { .. } => e.to_string(),
            e => panic!("{e}"),
        })
    }

    struct Files(tempfile::TempDir);

    impl Files {
        fn new(files: &[(&str, &str)]) -> Files {
            let dir = tempfile::tempdir().unwrap();
            for (name, text) in files {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Files(dir)
        }
        fn path(&self, name: &str) -> String {
            self.0.path().join(name).display().to_string()
        }
    }

    #[test]
    fn tokens_are_read_and_trimmed() {
        let f = Files::new(&[("a", "tok-a\n"), ("b", "  tok-b \r\n\n")]);
        let doc = parse(&format!(
            "auth:\n  clusters:\n    - cluster: edge-a\n      token_file: {}\n    - {{cluster: edge-b, token_file: {}}}\n",
            f.path("a"),
            f.path("b")
        ))
        .unwrap();
        let c = &doc.auth.clusters.0;
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].cluster.as_str(), c[0].token.as_str()),
            ("edge-a", "tok-a")
        );
        assert_eq!(
            (c[1].cluster.as_str(), c[1].token.as_str()),
            ("edge-b", "tok-b")
        );
        let shown = format!("{doc:?}");
        assert!(
            !shown.contains("tok-a") && shown.contains("<secret>"),
            "{shown}"
        );
    }

    /// Each bad token file is an error at the entry's line, naming the file.
    #[test]
    fn bad_token_files_are_located() {
        let f = Files::new(&[
            ("a", "tok-a\n"),
            ("empty", "\n  \n"),
            ("same", "tok-a"),
            ("spaced", "tok en"),
        ]);
        let missing = f.path("missing");
        for (second, want) in [
            (
                format!("{{cluster: edge-b, token_file: {}}}", f.path("empty")),
                format!("token file {} is empty", f.path("empty")),
            ),
            (
                format!("{{cluster: edge-b, token_file: {missing}}}"),
                format!("token file {missing}: "),
            ),
            (
                format!("{{cluster: edge-b, token_file: {}}}", f.path("spaced")),
                "visible ASCII without spaces".to_string(),
            ),
            (
                format!("{{cluster: edge-b, token_file: {}}}", f.path("same")),
                format!(
                    "token file {} holds the same token as {} (cluster \"edge-a\")",
                    f.path("same"),
                    f.path("a")
                ),
            ),
            (
                format!("{{cluster: edge-a, token_file: {}}}", f.path("same")),
                "cluster \"edge-a\" is listed twice".to_string(),
            ),
            (
                format!("{{cluster: '', token_file: {}}}", f.path("same")),
                "must not be empty".to_string(),
            ),
        ] {
            let text = format!(
                "auth:\n  clusters:\n    - {{cluster: edge-a, token_file: {}}}\n    - {second}\n",
                f.path("a")
            );
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with("cfg.yaml:4:"), "{e}");
            assert!(e.contains(&want), "{e}\nwant: {want}");
        }
    }

    #[test]
    fn a_token_file_is_checked_at_load() {
        let f = Files::new(&[("t", "tok\n"), ("empty", "")]);
        let doc = parse(&format!("token_file: {}\n", f.path("t"))).unwrap();
        assert_eq!(doc.token_file.unwrap().0.display().to_string(), f.path("t"));
        let e = parse(&format!("\ntoken_file: {}\n", f.path("empty"))).unwrap_err();
        assert!(
            e.starts_with("cfg.yaml:2:13: token_file: token file") && e.ends_with("is empty"),
            "{e}"
        );
    }

    #[test]
    fn bcrypt_hashes_are_checked_and_not_printed() {
        let hash = bcrypt::hash_with_result("pw", 4)
            .unwrap()
            .format_for_version(bcrypt::Version::TwoY);
        let doc = parse(&format!("users:\n  prometheus: \"{hash}\"\n")).unwrap();
        assert_eq!(doc.users["prometheus"].0, hash);
        assert!(!format!("{doc:?}").contains(&hash));
        let e = parse("users:\n  prometheus: secret\n").unwrap_err();
        assert!(
            e.starts_with("cfg.yaml:2:") && e.contains("not a bcrypt hash"),
            "{e}"
        );
    }
}
