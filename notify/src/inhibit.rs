//! Inhibition, as Alertmanager's `inhibit/inhibit.go`: a target alert is muted while a
//! *firing* source alert exists that matches the rule's source matchers and has the
//! same values (a missing label counts as "") for every `equal` label. An alert never
//! inhibits itself.

use super::model::Labels;
use edgewatch_config::alerting::{InhibitRuleConfig, Matcher};

#[derive(Debug, Clone)]
pub struct InhibitRule {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

impl From<&InhibitRuleConfig> for InhibitRule {
    fn from(c: &InhibitRuleConfig) -> Self {
        InhibitRule {
            source: c.all_source_matchers(),
            target: c.all_target_matchers(),
            equal: c.equal.clone(),
        }
    }
}

fn all(ms: &[Matcher], l: &Labels) -> bool {
    ms.iter().all(|m| m.matches(l))
}

/// Whether `target` (with fingerprint `target_fp`) is inhibited by any of the
/// currently firing alerts `firing` (fingerprint, labels).
pub fn is_inhibited<'a>(
    rules: &[InhibitRule],
    target_fp: u64,
    target: &Labels,
    firing: impl Iterator<Item = (u64, &'a Labels)> + Clone,
) -> bool {
    rules.iter().any(|r| {
        all(&r.target, target)
            && firing.clone().any(|(fp, src)| {
                fp != target_fp
                    && all(&r.source, src)
                    && r.equal.iter().all(|e| {
                        src.get(e).map(String::as_str).unwrap_or("")
                            == target.get(e).map(String::as_str).unwrap_or("")
                    })
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fingerprint;
    use crate::model::test_labels as l;
    use edgewatch_config::alerting::parse_matchers;

    #[test]
    fn inhibition_table() {
        let rule = InhibitRule {
            source: parse_matchers(r#"severity="critical""#).unwrap(),
            target: parse_matchers(r#"severity=~"warning|info""#).unwrap(),
            equal: vec!["cluster".into(), "alertname".into()],
        };
        let node_down = InhibitRule {
            source: parse_matchers(r#"alertname="NodeDown""#).unwrap(),
            target: parse_matchers(r#"alertname!="NodeDown""#).unwrap(),
            equal: vec!["node".into()],
        };
        let rules = vec![rule, node_down];
        // (firing sources, target, inhibited?)
        let cases: &[(&[&str], &str, bool)] = &[
            (
                &["alertname=A,severity=critical,cluster=c1"],
                "alertname=A,severity=warning,cluster=c1",
                true,
            ),
            (
                &["alertname=A,severity=critical,cluster=c1"],
                "alertname=A,severity=warning,cluster=c2",
                false,
            ),
            (
                &["alertname=A,severity=critical,cluster=c1"],
                "alertname=B,severity=warning,cluster=c1",
                false,
            ),
            (
                &["alertname=A,severity=critical,cluster=c1"],
                "alertname=A,severity=critical,cluster=c1",
                false,
            ),
            (
                &["alertname=A,severity=warning,cluster=c1"],
                "alertname=A,severity=info,cluster=c1",
                false,
            ),
            // equal on a label both lack: "" == ""
            (
                &["alertname=A,severity=critical"],
                "alertname=A,severity=info",
                true,
            ),
            (
                &["alertname=NodeDown,node=n1"],
                "alertname=ModelDown,node=n1",
                true,
            ),
            (
                &["alertname=NodeDown,node=n1"],
                "alertname=ModelDown,node=n2",
                false,
            ),
            // an alert matching source and target does not inhibit itself
            (
                &["alertname=NodeDown,node=n1"],
                "alertname=NodeDown,node=n1",
                false,
            ),
            (&[], "alertname=A,severity=warning", false),
        ];
        for (sources, target, want) in cases {
            let srcs: Vec<(u64, Labels)> =
                sources.iter().map(|s| (fingerprint(&l(s)), l(s))).collect();
            let t = l(target);
            let got = is_inhibited(
                &rules,
                fingerprint(&t),
                &t,
                srcs.iter().map(|(f, l)| (*f, l)),
            );
            assert_eq!(got, *want, "{sources:?} → {target}");
        }
    }
}
