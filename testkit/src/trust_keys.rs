//! The configuration keys of TLS, client identity and basic auth, whose files (certificates,
//! keys, tokens) the deploy manifests and README.md examples name at paths that exist only
//! inside a pod (`/etc/edgewatch/tls/...`), and which the config loader checks. Tests that
//! validate such a config here remove these keys first and check the rest; the keys
//! themselves are checked by the TLS and auth tests, and the deployed files by
//! `edgewatch validate` with the files in place (README, "Securing edge to core").

use serde_yaml_ng::Value;

/// (parent path, key) of every Interface key.
const KEYS: [(&[&str], &str); 7] = [
    (&["receivers", "otlp"], "tls"),
    (&[], "auth"),
    (&["http"], "tls"),
    (&["http"], "basic_auth_users"),
    (&["forward"], "tls"),
    (&["forward"], "bearer_token_file"),
    (&["admin"], "tls"),
];

/// `yaml` without the Interface keys (comments are not kept). Panics on YAML that does
/// not parse: the config under test is the repository's own.
pub fn without_trust_keys(yaml: &str) -> String {
    let mut doc: Value = serde_yaml_ng::from_str(yaml).expect("config YAML");
    for (parent, key) in KEYS {
        let mut node = Some(&mut doc);
        for step in parent {
            node = node.and_then(|n| n.get_mut(*step));
        }
        if let Some(map) = node.and_then(Value::as_mapping_mut) {
            map.remove(key);
        }
    }
    serde_yaml_ng::to_string(&doc).expect("YAML")
}
