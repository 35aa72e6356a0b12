//! Silences: Alertmanager's model (`matchers` with `isRegex`/`isEqual`, `startsAt`,
//! `endsAt`, `createdBy`, `comment`). A silence mutes a firing alert while
//! `startsAt <= now < endsAt` and every matcher matches. Deleting a silence expires it
//! (`endsAt = now`), as Alertmanager does; expired silences are kept for
//! [`RETENTION`] and then dropped. Persisted in sled (tree `notify_silences`).

use super::model::{parse_rfc3339, rfc3339, Labels, TimeError};
use edgewatch_config::alerting::{MatchOp, Matcher, MatcherError};
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

/// Why a silence is refused.
#[derive(Debug, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    #[error("{0}")]
    Matcher(#[source] MatcherError),
    #[error("at least one matcher must not match the empty string (it would silence everything)")]
    MatchesEverything,
    #[error(transparent)]
    Time(#[from] TimeError),
    #[error("endsAt must be after startsAt")]
    EndsBeforeStart,
    #[error("endsAt is in the past")]
    EndsInThePast,
    #[error("createdBy is required")]
    NoCreatedBy,
    #[error("comment is required")]
    NoComment,
    #[error("invalid silence JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// Expired silences are kept this long (for the API) before being deleted.
pub const RETENTION: Duration = Duration::from_secs(5 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

/// The JSON form, in the API and in sled.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceJson {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<SilenceStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SilenceStatus {
    pub state: String,
}

#[derive(Debug, Clone)]
pub struct Silence {
    pub id: String,
    pub raw: Vec<SilenceMatcher>,
    pub matchers: Vec<Matcher>,
    pub starts_at: SystemTime,
    pub ends_at: SystemTime,
    pub created_by: String,
    pub comment: String,
    pub updated_at: SystemTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Pending,
    Active,
    Expired,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Active => "active",
            State::Expired => "expired",
        }
    }
}

impl Silence {
    /// Validates a posted silence. `id` is kept if given (an update).
    pub fn from_json(j: &SilenceJson, now: SystemTime) -> Result<Silence, SilenceError> {
        if j.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        let mut matchers = Vec::new();
        for m in &j.matchers {
            let op = match (m.is_regex, m.is_equal) {
                (false, true) => MatchOp::Eq,
                (false, false) => MatchOp::Ne,
                (true, true) => MatchOp::Re,
                (true, false) => MatchOp::NotRe,
            };
            matchers.push(Matcher::new(&m.name, op, &m.value).map_err(SilenceError::Matcher)?);
        }
        if matchers.iter().all(|m| m.matches_value("")) {
            return Err(SilenceError::MatchesEverything);
        }
        let starts_at = parse_rfc3339(&j.starts_at)?;
        let ends_at = parse_rfc3339(&j.ends_at)?;
        if ends_at <= starts_at {
            return Err(SilenceError::EndsBeforeStart);
        }
        if ends_at <= now && j.id.is_none() {
            return Err(SilenceError::EndsInThePast);
        }
        if j.created_by.trim().is_empty() {
            return Err(SilenceError::NoCreatedBy);
        }
        if j.comment.trim().is_empty() {
            return Err(SilenceError::NoComment);
        }
        Ok(Silence {
            id: j
                .id
                .clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
            raw: j.matchers.clone(),
            matchers,
            starts_at,
            ends_at,
            created_by: j.created_by.clone(),
            comment: j.comment.clone(),
            updated_at: j
                .updated_at
                .as_deref()
                .and_then(|u| parse_rfc3339(u).ok())
                .unwrap_or(now),
        })
    }

    pub fn to_json(&self, now: SystemTime) -> SilenceJson {
        SilenceJson {
            id: Some(self.id.clone()),
            matchers: self.raw.clone(),
            starts_at: rfc3339(self.starts_at),
            ends_at: rfc3339(self.ends_at),
            created_by: self.created_by.clone(),
            comment: self.comment.clone(),
            updated_at: Some(rfc3339(self.updated_at)),
            status: Some(SilenceStatus {
                state: self.state(now).as_str().into(),
            }),
        }
    }

    pub fn state(&self, now: SystemTime) -> State {
        if now < self.starts_at {
            State::Pending
        } else if now < self.ends_at {
            State::Active
        } else {
            State::Expired
        }
    }

    pub fn mutes(&self, labels: &Labels, now: SystemTime) -> bool {
        self.state(now) == State::Active && self.matchers.iter().all(|m| m.matches(labels))
    }

    /// Expire now (Alertmanager's delete).
    pub fn expire(&mut self, now: SystemTime) {
        if self.starts_at > now {
            self.starts_at = now;
        }
        if self.ends_at > now {
            self.ends_at = now;
        }
        self.updated_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::from_ms;
    use crate::model::test_labels as l;

    fn sil(matchers: &[(&str, &str, bool, bool)], start_s: i64, end_s: i64) -> Silence {
        let j = SilenceJson {
            id: None,
            matchers: matchers
                .iter()
                .map(|(n, v, r, e)| SilenceMatcher {
                    name: n.to_string(),
                    value: v.to_string(),
                    is_regex: *r,
                    is_equal: *e,
                })
                .collect(),
            starts_at: rfc3339(from_ms(start_s * 1000)),
            ends_at: rfc3339(from_ms(end_s * 1000)),
            created_by: "me".into(),
            comment: "maintenance".into(),
            updated_at: None,
            status: None,
        };
        Silence::from_json(&j, from_ms(0)).unwrap()
    }

    #[test]
    fn silence_table() {
        let s_eq = sil(&[("alertname", "A", false, true)], 100, 200);
        let s_re = sil(
            &[
                ("cluster", "edge-.*", true, true),
                ("severity", "critical", false, false),
            ],
            100,
            200,
        );
        let s_nre = sil(
            &[
                ("alertname", "A", false, true),
                ("node", "n[12]", true, false),
            ],
            100,
            200,
        );
        let cases: &[(&Silence, &str, i64, bool)] = &[
            (&s_eq, "alertname=A", 150, true),
            (&s_eq, "alertname=A", 99, false),  // pending
            (&s_eq, "alertname=A", 200, false), // expired at endsAt
            (&s_eq, "alertname=B", 150, false),
            (&s_re, "cluster=edge-1,severity=warning", 150, true),
            (&s_re, "cluster=edge-1,severity=critical", 150, false),
            (&s_re, "cluster=core,severity=warning", 150, false),
            (&s_re, "cluster=xedge-1,severity=warning", 150, false), // anchored
            (&s_nre, "alertname=A,node=n3", 150, true),
            (&s_nre, "alertname=A,node=n1", 150, false),
            (&s_nre, "alertname=A,x=y", 150, true), // missing label "" !~ n[12]
        ];
        for (s, labels, at, want) in cases {
            assert_eq!(
                s.mutes(&l(labels), from_ms(at * 1000)),
                *want,
                "{:?} {labels} @{at}",
                s.raw
            );
        }
        assert_eq!(s_eq.state(from_ms(50_000)), State::Pending);
        let mut e = s_eq.clone();
        e.expire(from_ms(150_000));
        assert_eq!(e.state(from_ms(150_000)), State::Expired);
    }

    #[test]
    fn invalid_silences() {
        let base = sil(&[("a", "b", false, true)], 100, 200).to_json(from_ms(0));
        let mut j = base.clone();
        j.matchers = vec![];
        assert!(Silence::from_json(&j, from_ms(0)).is_err());
        let mut j = base.clone();
        j.matchers[0].value = ".*".into();
        j.matchers[0].is_regex = true;
        assert!(matches!(
            Silence::from_json(&j, from_ms(0)),
            Err(SilenceError::MatchesEverything)
        ));
        let mut j = base.clone();
        j.ends_at = j.starts_at.clone();
        assert!(Silence::from_json(&j, from_ms(0)).is_err());
        let mut j = base.clone();
        j.comment = "".into();
        assert!(Silence::from_json(&j, from_ms(0)).is_err());
    }
}
