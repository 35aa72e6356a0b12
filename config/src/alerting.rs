//! `alerting:` — what happens after an alert exists: routing, grouping, inhibition and
//! delivery. The shape is Alertmanager's own (`route`, `receivers`, `inhibit_rules`),
//! so an operator can paste an Alertmanager configuration under the aggregator's
//! `alerting:` key. Receivers: `pagerduty_configs`, `dynatrace_configs`,
//! `webhook_configs`, `alertmanager_configs`. Validation (unknown receivers, bad
//! matchers, secrets) happens while deserialising, so errors carry `FILE:LINE:COL`.
//!
//! ```yaml
//! alerting:
//!   external_url: http://edgewatch.example:9090
//!   route:
//!     receiver: default
//!     group_by: [alertname, cluster]
//!     routes:
//!       - matchers: ['severity="critical"']
//!         receiver: pager
//!   receivers:
//!     - name: default
//!       webhook_configs: [{url: http://hooks.example/alerts}]
//!     - name: pager
//!       pagerduty_configs: [{routing_key: "${PD_ROUTING_KEY}"}]
//!   inhibit_rules:
//!     - source_matchers: ['severity="critical"']
//!       target_matchers: ['severity="warning"']
//!       equal: [alertname, cluster]
//! ```

use crate::{ConfigPath, Dur, Url};
use edgewatch_prom::MatchType;
use serde::de::{self, Deserializer};
use serde::Deserialize;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

pub const DEFAULT_PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// The whole `alerting:` block.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// Shown to receivers as `externalURL` and PagerDuty `client_url`.
    pub external_url: String,
    /// A firing alert not re-sent by the rules for this long is considered resolved.
    pub resolve_timeout: Dur,
    pub route: RouteConfig,
    pub receivers: Vec<ReceiverConfig>,
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    pub delivery: DeliveryConfig,
    /// `alertmanager_configs`: a firing alert is re-pushed at most this often.
    pub resend_delay: Dur,
    /// The rules' evaluation interval; `alertmanager_configs` pushes firing alerts with
    /// `endsAt = now + 4 * max(eval_interval, 1m)`. The lead may also set it in code.
    pub eval_interval: Dur,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertingConfig {
    #[serde(default)]
    global: GlobalConfig,
    #[serde(default)]
    external_url: Option<Url>,
    #[serde(default)]
    resolve_timeout: Option<Dur>,
    route: RouteConfig,
    #[serde(default)]
    receivers: Vec<ReceiverConfig>,
    #[serde(default)]
    inhibit_rules: Vec<InhibitRuleConfig>,
    #[serde(default)]
    delivery: DeliveryConfig,
    #[serde(default = "default_resend_delay")]
    resend_delay: Dur,
    #[serde(default = "default_eval_interval")]
    eval_interval: Dur,
    /// Accepted for pasted Alertmanager configurations; must be empty.
    #[serde(default)]
    templates: Vec<String>,
}

/// Alertmanager's `global:` — the keys that matter here.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    pub resolve_timeout: Option<Dur>,
    pub pagerduty_url: Option<Url>,
}

fn default_resend_delay() -> Dur {
    Dur::secs(60)
}
fn default_eval_interval() -> Dur {
    Dur::secs(60)
}

impl<'de> Deserialize<'de> for AlertingConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawAlertingConfig::deserialize(d)?;
        if !raw.templates.is_empty() {
            return Err(de::Error::custom(
                "templates: template files are not supported",
            ));
        }
        let mut route = raw.route;
        if route.receiver.is_none() {
            return Err(de::Error::custom(
                "route.receiver: the root route needs a receiver",
            ));
        }
        if !route.matchers.0.is_empty() {
            return Err(de::Error::custom(
                "route.matchers: the root route must not have matchers",
            ));
        }
        let mut names = HashSet::new();
        for (i, r) in raw.receivers.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                return Err(de::Error::custom(format!(
                    "receivers[{i}].name: receiver {:?} defined twice",
                    r.name
                )));
            }
        }
        let mut defined: Vec<&str> = names.iter().copied().collect();
        defined.sort_unstable();
        check_route(&route, "route", &names, &defined).map_err(de::Error::custom)?;
        let pd_url = raw.global.pagerduty_url.clone();
        let mut receivers = raw.receivers;
        for (i, r) in receivers.iter_mut().enumerate() {
            for (j, p) in r.pagerduty_configs.iter_mut().enumerate() {
                if p.url.is_none() {
                    p.url = pd_url.clone();
                }
                if let Some(url) = &p.url {
                    require_https(url, p.insecure).map_err(|e| {
                        de::Error::custom(format!("receivers[{i}].pagerduty_configs[{j}].url: {e}"))
                    })?;
                }
            }
        }
        for (i, r) in raw.inhibit_rules.iter().enumerate() {
            for (k, v) in r.source_match_re.iter().chain(&r.target_match_re) {
                Matcher::new(k, MatchOp::Re, v)
                    .map_err(|e| de::Error::custom(format!("inhibit_rules[{i}]: {e}")))?;
            }
        }
        route.fill_defaults();
        Ok(AlertingConfig {
            external_url: raw.external_url.map(|u| u.0).unwrap_or_default(),
            resolve_timeout: raw
                .resolve_timeout
                .or(raw.global.resolve_timeout)
                .unwrap_or(Dur::secs(300)),
            route,
            receivers,
            inhibit_rules: raw.inhibit_rules,
            delivery: raw.delivery,
            resend_delay: raw.resend_delay,
            eval_interval: raw.eval_interval,
        })
    }
}

/// A route that refers to what does not exist or cannot work.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("{path}.receiver: unknown receiver {receiver:?} (defined: {defined})")]
    UnknownReceiver {
        path: String,
        receiver: String,
        defined: String,
    },
    #[error("{path}.group_by: '...' must be the only element")]
    GroupByAll { path: String },
    #[error("{path}.{key}: {source}")]
    Matcher {
        path: String,
        key: &'static str,
        #[source]
        source: MatcherError,
    },
}

fn check_route(
    r: &RouteConfig,
    path: &str,
    names: &HashSet<&str>,
    defined: &[&str],
) -> Result<(), RouteError> {
    if let Some(recv) = &r.receiver {
        if !names.contains(recv.as_str()) {
            return Err(RouteError::UnknownReceiver {
                path: path.to_string(),
                receiver: recv.clone(),
                defined: defined.join(", "),
            });
        }
    }
    if let Some(g) = &r.group_by {
        if g.iter().any(|l| l == "...") && g.len() > 1 {
            return Err(RouteError::GroupByAll {
                path: path.to_string(),
            });
        }
    }
    let matcher_error = |key, source| RouteError::Matcher {
        path: path.to_string(),
        key,
        source,
    };
    for (k, v) in &r.match_re {
        Matcher::new(k, MatchOp::Re, v).map_err(|e| matcher_error("match_re", e))?;
    }
    for (k, v) in &r.match_eq {
        Matcher::new(k, MatchOp::Eq, v).map_err(|e| matcher_error("match", e))?;
    }
    for (i, c) in r.routes.iter().enumerate() {
        check_route(c, &format!("{path}.routes[{i}]"), names, defined)?;
    }
    Ok(())
}

impl AlertingConfig {
    /// Parses an `alerting:` block on its own (tests, tools).
    pub fn from_yaml(text: &str) -> Result<Self, crate::ConfigError> {
        crate::parse(text, "<alerting>")
    }

    pub fn receiver(&self, name: &str) -> Option<&ReceiverConfig> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

/// Retry and timeout policy of every delivery (an edgewatch addition).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// One HTTP request.
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_initial_backoff")]
    pub initial_backoff: Dur,
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Dur,
    /// Give up (counted `retries_exhausted`) after retrying this long.
    #[serde(default = "default_max_retry")]
    pub max_retry_duration: Dur,
}

fn default_timeout() -> Dur {
    Dur::secs(10)
}
fn default_initial_backoff() -> Dur {
    Dur::millis(500)
}
fn default_max_backoff() -> Dur {
    Dur::secs(30)
}
fn default_max_retry() -> Dur {
    Dur::secs(300)
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            timeout: default_timeout(),
            initial_backoff: default_initial_backoff(),
            max_backoff: default_max_backoff(),
            max_retry_duration: default_max_retry(),
        }
    }
}

/// One node of the routing tree. Unset options inherit from the parent
/// (`fill_defaults` resolves them; the root's defaults are Alertmanager's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub receiver: Option<String>,
    /// `['...']` groups by all labels.
    pub group_by: Option<Vec<String>>,
    pub group_wait: Option<Dur>,
    pub group_interval: Option<Dur>,
    pub repeat_interval: Option<Dur>,
    #[serde(default)]
    pub matchers: Matchers,
    /// Deprecated Alertmanager form: `match: {label: value}`.
    #[serde(default, rename = "match")]
    pub match_eq: BTreeMap<String, String>,
    /// Deprecated Alertmanager form: `match_re: {label: regex}`.
    #[serde(default)]
    pub match_re: BTreeMap<String, String>,
    #[serde(default, rename = "continue")]
    pub continue_matching: bool,
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
}

impl RouteConfig {
    fn fill_defaults(&mut self) {
        self.group_by.get_or_insert_with(Vec::new);
        self.group_wait.get_or_insert(Dur::secs(30));
        self.group_interval.get_or_insert(Dur::secs(300));
        self.repeat_interval.get_or_insert(Dur::secs(4 * 3600));
        // fold match / match_re into matchers
        for (k, v) in std::mem::take(&mut self.match_eq) {
            self.matchers
                .0
                .push(Matcher::new(&k, MatchOp::Eq, &v).expect("equality matcher"));
        }
        for (k, v) in std::mem::take(&mut self.match_re) {
            // validated while deserialising (see `Matchers`); a bad regex can't reach here
            if let Ok(m) = Matcher::new(&k, MatchOp::Re, &v) {
                self.matchers.0.push(m);
            }
        }
        let parent = self.clone();
        for c in &mut self.routes {
            if c.receiver.is_none() {
                c.receiver = parent.receiver.clone();
            }
            if c.group_by.is_none() {
                c.group_by = parent.group_by.clone();
            }
            c.group_wait = c.group_wait.or(parent.group_wait);
            c.group_interval = c.group_interval.or(parent.group_interval);
            c.repeat_interval = c.repeat_interval.or(parent.repeat_interval);
            c.fill_defaults();
        }
    }

    /// After deserialisation, always set.
    pub fn receiver_name(&self) -> &str {
        self.receiver.as_deref().unwrap_or("")
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    pub name: String,
    #[serde(default)]
    pub pagerduty_configs: Vec<PagerDutyConfig>,
    #[serde(default)]
    pub dynatrace_configs: Vec<DynatraceConfig>,
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    #[serde(default)]
    pub alertmanager_configs: Vec<AlertmanagerPushConfig>,
}

/// PagerDuty Events API v2.
#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    pub send_resolved: bool,
    pub routing_key: SecretSource,
    /// Default `https://events.pagerduty.com/v2/enqueue` (or `global.pagerduty_url`).
    pub url: Option<Url>,
    /// Allows an `http://` url (a local stand-in): the routing key then goes out
    /// in plaintext.
    pub insecure: bool,
    pub client: String,
    /// Template; default `{{ .ExternalURL }}`.
    pub client_url: String,
    /// Template of `payload.summary`; default: annotations.summary, else alertname + labels.
    pub description: Option<String>,
    /// Template or literal; must expand to critical|error|warning|info (else `error`).
    pub severity: String,
    pub source: Option<String>,
    pub component: Option<String>,
    pub group: Option<String>,
    pub class: Option<String>,
    /// Extra `custom_details` entries (templates).
    pub details: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPagerDuty {
    #[serde(default = "yes")]
    send_resolved: bool,
    routing_key: Option<Secret>,
    routing_key_file: Option<ConfigPath>,
    url: Option<Url>,
    #[serde(default)]
    insecure: bool,
    #[serde(default = "default_client")]
    client: String,
    #[serde(default = "default_client_url")]
    client_url: String,
    description: Option<String>,
    #[serde(default = "default_severity")]
    severity: String,
    source: Option<String>,
    component: Option<String>,
    group: Option<String>,
    class: Option<String>,
    #[serde(default)]
    details: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn default_client() -> String {
    "edgewatch".into()
}
fn default_client_url() -> String {
    "{{ .ExternalURL }}".into()
}
fn default_severity() -> String {
    "error".into()
}

impl<'de> Deserialize<'de> for PagerDutyConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawPagerDuty::deserialize(d)?;
        let routing_key = SecretSource::one_of(r.routing_key, r.routing_key_file, "routing_key")
            .map_err(de::Error::custom)?;
        if let SecretSource::Value(k) = &routing_key {
            if k.0.len() != 32 {
                return Err(de::Error::custom(format!(
                    "routing_key: a PagerDuty Events v2 routing key has 32 characters, this one {}",
                    k.0.len()
                )));
            }
        }
        if !r.severity.contains("{{")
            && !matches!(
                r.severity.as_str(),
                "critical" | "error" | "warning" | "info"
            )
        {
            return Err(de::Error::custom(format!(
                "severity: {:?} is not one of critical, error, warning, info",
                r.severity
            )));
        }
        Ok(PagerDutyConfig {
            send_resolved: r.send_resolved,
            routing_key,
            url: r.url,
            insecure: r.insecure,
            client: r.client,
            client_url: r.client_url,
            description: r.description,
            severity: r.severity,
            source: r.source,
            component: r.component,
            group: r.group,
            class: r.class,
            details: r.details,
        })
    }
}

/// Dynatrace Events API v2 (`POST {url}/api/v2/events/ingest`).
#[derive(Debug, Clone)]
pub struct DynatraceConfig {
    pub send_resolved: bool,
    /// The environment, e.g. `https://abc123.live.dynatrace.com`.
    pub url: Url,
    /// Allows an `http://` url (a local stand-in): the API token then goes out in
    /// plaintext.
    pub insecure: bool,
    pub api_token: SecretSource,
    pub event_type: String,
    /// Template, e.g. `type(HOST),entityName("{{ .CommonLabels.node }}")`.
    pub entity_selector: Option<String>,
    /// Template of the title; default `[FIRING] alertname (group labels)` style.
    pub title: Option<String>,
    /// Whole minutes, 1..=360.
    pub timeout_minutes: u32,
    /// Extra properties (templates).
    pub properties: BTreeMap<String, String>,
}

pub const DYNATRACE_EVENT_TYPES: &[&str] = &[
    "CUSTOM_ALERT",
    "CUSTOM_ANNOTATION",
    "CUSTOM_CONFIGURATION",
    "CUSTOM_DEPLOYMENT",
    "CUSTOM_INFO",
    "ERROR_EVENT",
    "AVAILABILITY_EVENT",
    "PERFORMANCE_EVENT",
    "RESOURCE_CONTENTION_EVENT",
    "MARKED_FOR_TERMINATION",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDynatrace {
    #[serde(default = "yes")]
    send_resolved: bool,
    url: Url,
    #[serde(default)]
    insecure: bool,
    api_token: Option<Secret>,
    api_token_file: Option<ConfigPath>,
    #[serde(default = "default_event_type")]
    event_type: String,
    entity_selector: Option<String>,
    title: Option<String>,
    #[serde(default = "default_dt_timeout")]
    timeout: Dur,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

fn default_event_type() -> String {
    "CUSTOM_ALERT".into()
}
fn default_dt_timeout() -> Dur {
    Dur::secs(15 * 60)
}

impl<'de> Deserialize<'de> for DynatraceConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let r = RawDynatrace::deserialize(d)?;
        let api_token = SecretSource::one_of(r.api_token, r.api_token_file, "api_token")
            .map_err(de::Error::custom)?;
        require_https(&r.url, r.insecure).map_err(|e| de::Error::custom(format!("url: {e}")))?;
        if !DYNATRACE_EVENT_TYPES.contains(&r.event_type.as_str()) {
            return Err(de::Error::custom(format!(
                "event_type: {:?} is not one of {}",
                r.event_type,
                DYNATRACE_EVENT_TYPES.join(", ")
            )));
        }
        let secs = r.timeout.get().as_secs();
        if !secs.is_multiple_of(60) || !(60..=360 * 60).contains(&secs) {
            return Err(de::Error::custom(format!(
                "timeout: {} must be whole minutes between 1m and 360m",
                r.timeout
            )));
        }
        if r.properties.len() > 90 {
            return Err(de::Error::custom(
                "properties: at most 90 extra properties (Dynatrace allows 100 in all)",
            ));
        }
        Ok(DynatraceConfig {
            send_resolved: r.send_resolved,
            url: Url(r.url.0.trim_end_matches('/').to_string()),
            insecure: r.insecure,
            api_token,
            event_type: r.event_type,
            entity_selector: r.entity_selector,
            title: r.title,
            timeout_minutes: (secs / 60) as u32,
            properties: r.properties,
        })
    }
}

/// A receiver that carries a secret (routing key, API token) talks `https://` only,
/// unless its `insecure: true` says a plaintext stand-in is meant.
fn require_https(url: &Url, insecure: bool) -> Result<(), String> {
    if insecure || url.0.starts_with("https://") {
        return Ok(());
    }
    Err(format!(
        "{url} is not https://: the credentials would go out in plaintext (set `insecure: true` for a local stand-in)"
    ))
}

/// Alertmanager's webhook receiver (payload version "4").
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    #[serde(default = "yes")]
    pub send_resolved: bool,
    pub url: Url,
    /// 0 = all alerts; otherwise the payload carries at most this many
    /// (`truncatedAlerts` counts the rest).
    #[serde(default)]
    pub max_alerts: usize,
}

/// Push to a real Alertmanager's `/api/v2/alerts` (no grouping here: it groups).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerPushConfig {
    /// Base URL of the Alertmanager, e.g. `http://alertmanager:9093`.
    pub url: Url,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitRuleConfig {
    #[serde(default)]
    pub source_matchers: Matchers,
    #[serde(default)]
    pub target_matchers: Matchers,
    #[serde(default)]
    pub source_match: BTreeMap<String, String>,
    #[serde(default)]
    pub source_match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub target_match: BTreeMap<String, String>,
    #[serde(default)]
    pub target_match_re: BTreeMap<String, String>,
    #[serde(default)]
    pub equal: Vec<String>,
}

impl InhibitRuleConfig {
    /// `source_matchers` plus the deprecated `source_match`/`source_match_re`.
    pub fn all_source_matchers(&self) -> Vec<Matcher> {
        merged(
            &self.source_matchers,
            &self.source_match,
            &self.source_match_re,
        )
    }
    pub fn all_target_matchers(&self) -> Vec<Matcher> {
        merged(
            &self.target_matchers,
            &self.target_match,
            &self.target_match_re,
        )
    }
}

fn merged(
    m: &Matchers,
    eq: &BTreeMap<String, String>,
    re: &BTreeMap<String, String>,
) -> Vec<Matcher> {
    let mut out = m.0.clone();
    out.extend(
        eq.iter()
            .filter_map(|(k, v)| Matcher::new(k, MatchOp::Eq, v).ok()),
    );
    out.extend(
        re.iter()
            .filter_map(|(k, v)| Matcher::new(k, MatchOp::Re, v).ok()),
    );
    out
}

// ---------------------------------------------------------------------------------
// Matchers (Alertmanager syntax)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl fmt::Display for MatchOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        })
    }
}

/// Why a label matcher cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MatcherError {
    #[error("invalid label name {0:?}")]
    LabelName(String),
    #[error("{0}")]
    Regex(#[source] edgewatch_prom::RegexError),
}

/// Why a matcher string (Alertmanager syntax) is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseMatcherError {
    #[error("invalid matcher {0:?}: expected name=\"value\"")]
    NoOperator(String),
    #[error("invalid matcher {0:?}: unknown operator")]
    UnknownOperator(String),
    #[error("invalid matcher {0:?}: unterminated quote")]
    UnterminatedQuote(String),
    #[error("invalid matcher {0:?}: trailing backslash")]
    TrailingBackslash(String),
    #[error("invalid matcher {0:?}: unescaped quote")]
    UnescapedQuote(String),
    #[error("invalid matcher {matcher:?}: {source}")]
    Invalid {
        matcher: String,
        #[source]
        source: MatcherError,
    },
    #[error("no matcher in {0:?}")]
    Empty(String),
}

/// One label matcher: `name="v"`, `name!="v"`, `name=~"re"`, `name!~"re"` (regexes
/// anchored at both ends, as Alertmanager's). A missing label matches as `""`.
#[derive(Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    matcher: edgewatch_prom::Matcher,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl fmt::Display for Matcher {
    /// Alertmanager's `%s%s%q`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{:?}", self.name, self.op, self.value)
    }
}

impl Matcher {
    pub fn new(name: &str, op: MatchOp, value: &str) -> Result<Self, MatcherError> {
        if !edgewatch_prom::valid_label_name(name) {
            return Err(MatcherError::LabelName(name.to_string()));
        }
        let kind = match op {
            MatchOp::Eq => MatchType::Equal,
            MatchOp::Ne => MatchType::NotEqual,
            MatchOp::Re => MatchType::Regex,
            MatchOp::NotRe => MatchType::NotRegex,
        };
        let matcher =
            edgewatch_prom::Matcher::new(name, kind, value).map_err(MatcherError::Regex)?;
        Ok(Matcher {
            name: name.to_string(),
            op,
            value: value.to_string(),
            matcher,
        })
    }

    pub fn matches_value(&self, v: &str) -> bool {
        self.matcher.matches(v)
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.matches_value(labels.get(&self.name).map(String::as_str).unwrap_or(""))
    }
}

/// Parses one Alertmanager matcher string, or several in `{a="b", c=~"d"}` form.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, ParseMatcherError> {
    let t = s.trim();
    let t = t
        .strip_prefix('{')
        .and_then(|x| x.strip_suffix('}'))
        .unwrap_or(t);
    let mut out = Vec::new();
    for part in split_unquoted(t) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        out.push(parse_matcher(part)?);
    }
    if out.is_empty() {
        return Err(ParseMatcherError::Empty(s.to_string()));
    }
    Ok(out)
}

fn split_unquoted(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_matcher(s: &str) -> Result<Matcher, ParseMatcherError> {
    let i = s
        .find(['=', '!'])
        .ok_or_else(|| ParseMatcherError::NoOperator(s.to_string()))?;
    let name = s[..i].trim();
    let rest = &s[i..];
    let (op, rest) = if let Some(r) = rest.strip_prefix("=~") {
        (MatchOp::Re, r)
    } else if let Some(r) = rest.strip_prefix("!~") {
        (MatchOp::NotRe, r)
    } else if let Some(r) = rest.strip_prefix("!=") {
        (MatchOp::Ne, r)
    } else if let Some(r) = rest.strip_prefix('=') {
        (MatchOp::Eq, r)
    } else {
        return Err(ParseMatcherError::UnknownOperator(s.to_string()));
    };
    let rest = rest.trim();
    let value = if let Some(q) = rest.strip_prefix('"') {
        let q = q
            .strip_suffix('"')
            .ok_or_else(|| ParseMatcherError::UnterminatedQuote(s.to_string()))?;
        let mut v = String::new();
        let mut chars = q.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => v.push('\n'),
                    Some(o) => v.push(o),
                    None => return Err(ParseMatcherError::TrailingBackslash(s.to_string())),
                }
            } else if c == '"' {
                return Err(ParseMatcherError::UnescapedQuote(s.to_string()));
            } else {
                v.push(c);
            }
        }
        v
    } else {
        rest.to_string()
    };
    Matcher::new(name, op, &value).map_err(|source| ParseMatcherError::Invalid {
        matcher: s.to_string(),
        source,
    })
}

/// A `matchers:` list of strings; every entry is parsed and validated.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|m| m.matches(labels))
    }
}

impl fmt::Display for Matchers {
    /// Alertmanager's `{a="b",c=~"d"}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

impl<'de> Deserialize<'de> for Matchers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        let mut out = Vec::new();
        for s in &list {
            out.extend(parse_matchers(s).map_err(de::Error::custom)?);
        }
        Ok(Matchers(out))
    }
}

// ---------------------------------------------------------------------------------
// Secrets

/// A secret value (its `${NAME}` expanded like every configuration value, see
/// [`crate::expand`]). Never printed: `Debug` shows `<secret>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// Where a secret comes from: inline (with `${ENV}` expansion) or a file read when
/// the notifier starts (trailing newline trimmed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Value(Secret),
    File(ConfigPath),
}

impl SecretSource {
    fn one_of(
        v: Option<Secret>,
        f: Option<ConfigPath>,
        key: &'static str,
    ) -> Result<Self, SecretSourceError> {
        match (v, f) {
            (Some(v), None) => Ok(SecretSource::Value(v)),
            (None, Some(f)) => Ok(SecretSource::File(f)),
            (Some(_), Some(_)) => Err(SecretSourceError::Both { key }),
            (None, None) => Err(SecretSourceError::Neither { key }),
        }
    }

    /// The secret's value (reads the file).
    pub fn resolve(&self) -> Result<Secret, SecretError> {
        match self {
            SecretSource::Value(s) => Ok(s.clone()),
            SecretSource::File(p) => std::fs::read_to_string(p)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_string()))
                .map_err(|source| SecretError {
                    path: p.display().to_string(),
                    source,
                }),
        }
    }
}

/// A secret configured both inline and as a file, or not at all.
#[derive(Debug, thiserror::Error)]
pub enum SecretSourceError {
    #[error("{key} and {key}_file are mutually exclusive")]
    Both { key: &'static str },
    #[error("one of {key} or {key}_file is required")]
    Neither { key: &'static str },
}

/// A secret file that could not be read when the notifier started.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct SecretError {
    pub path: String,
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn matcher_syntax() {
        let l = labels(&[("a", "x"), ("b", "foo-1")]);
        for (m, want) in [
            (r#"a="x""#, true),
            (r#"a = "x""#, true),
            (r#"a!="x""#, false),
            (r#"b=~"foo-.*""#, true),
            (r#"b=~"foo""#, false),
            (r#"b!~"bar""#, true),
            (r#"c="""#, true),
            (r#"c!="""#, false),
            ("a=x", true),
            (r#"{a="x", b=~"f.*"}"#, true),
            (r#"a="x,y""#, false),
        ] {
            let ms = parse_matchers(m).unwrap();
            assert_eq!(ms.iter().all(|x| x.matches(&l)), want, "{m}");
        }
        for bad in ["a", r#"1a="x""#, r#"a=~"(""#, r#"a="x"#, r#"a<"x""#] {
            assert!(parse_matchers(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_matchers(r#"a=~"x|y""#).unwrap()[0].to_string(),
            r#"a=~"x|y""#
        );
    }

    /// The messages users see in configuration errors and silence API responses.
    #[test]
    fn matcher_messages() {
        for (bad, want) in [
            ("a", r#"invalid matcher "a": expected name="value""#),
            (
                r#"a<"x""#,
                r#"invalid matcher "a<\"x\"": expected name="value""#,
            ),
            ("a!x", r#"invalid matcher "a!x": unknown operator"#),
            (r#"a="x"#, r#"invalid matcher "a=\"x": unterminated quote"#),
            (
                r#"a="x\""#,
                r#"invalid matcher "a=\"x\\\"": trailing backslash"#,
            ),
            (
                r#"a="x"y""#,
                r#"invalid matcher "a=\"x\"y\"": unescaped quote"#,
            ),
            (
                r#"1a="x""#,
                r#"invalid matcher "1a=\"x\"": invalid label name "1a""#,
            ),
            ("{}", r#"no matcher in "{}""#),
        ] {
            assert_eq!(parse_matchers(bad).unwrap_err().to_string(), want, "{bad}");
        }
        let e = parse_matchers(r#"a=~"(""#).unwrap_err();
        let regex = edgewatch_prom::Matcher::regex("a", "(").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(r#"invalid matcher "a=~\"(\"": {regex}"#)
        );
        let ParseMatcherError::Invalid { source, .. } = &e else {
            panic!("{e:?}");
        };
        assert_eq!(source, &MatcherError::Regex(regex));
    }

    const OK: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_wait: 10s
      routes:
        - match: {team: db}
          group_by: ['...']
receivers:
  - name: default
    webhook_configs: [{url: http://127.0.0.1:1/hook}]
  - name: pager
    pagerduty_configs:
      - routing_key: 0123456789abcdef0123456789abcdef
inhibit_rules:
  - source_matchers: ['severity="critical"']
    target_matchers: ['severity="warning"']
    equal: [alertname]
"#;

    #[test]
    fn parses_and_inherits() {
        let c = AlertingConfig::from_yaml(OK).unwrap();
        assert_eq!(c.route.group_wait, Some(Dur::secs(30)));
        let child = &c.route.routes[0];
        assert_eq!(child.group_wait, Some(Dur::secs(10)));
        assert_eq!(
            child.group_by.as_deref(),
            Some(&["alertname".to_string()][..])
        );
        let grand = &child.routes[0];
        assert_eq!(grand.receiver.as_deref(), Some("pager"));
        assert_eq!(grand.group_wait, Some(Dur::secs(10)));
        assert_eq!(grand.repeat_interval, Some(Dur::secs(4 * 3600)));
        assert_eq!(grand.matchers.to_string(), r#"{team="db"}"#);
        assert!(format!("{c:?}").contains("<secret>"));
        assert!(!format!("{c:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn errors_are_located() {
        let bad = OK.replace("receiver: pager", "receiver: pagr");
        let e = AlertingConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown receiver \"pagr\""), "{e}");
        let bad = OK.replace(
            "severity=\"critical\"']\n      receiver",
            "severity=~\"(\"']\n      receiver",
        );
        let e = AlertingConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(
            e.starts_with("<alerting>:6:7: route.routes[0].matchers"),
            "{e}"
        );
        let bad = OK.replace("webhook_configs: [{url:", "webhook_configs: [{urll:");
        let e = AlertingConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown field `urll`"), "{e}");
        let bad = OK.replace("0123456789abcdef0123456789abcdef", "short");
        let e = AlertingConfig::from_yaml(&bad).unwrap_err().to_string();
        assert!(e.contains("32 characters"), "{e}");
    }

    #[test]
    fn pasted_alertmanager_config() {
        std::env::set_var("EW_TEST_PD_KEY", "fedcba9876543210fedcba9876543210");
        let c = AlertingConfig::from_yaml(
            r#"
global:
  resolve_timeout: 2m
  pagerduty_url: https://pd.example/v2/enqueue
templates: []
route:
  receiver: pd
  group_by: ['...']
  routes:
    - match_re: {service: "^(foo1|foo2)$"}
      receiver: pd
      continue: true
inhibit_rules:
  - source_match: {severity: critical}
    target_match_re: {severity: "warning|info"}
    equal: [alertname]
receivers:
  - name: pd
    pagerduty_configs:
      - routing_key: "${EW_TEST_PD_KEY}"
        details: {firing: '{{ .CommonLabels.alertname }}'}
    dynatrace_configs:
      - url: https://abc.live.dynatrace.com
        api_token_file: /run/secrets/dt
        timeout: 1h
"#,
        )
        .unwrap();
        assert_eq!(c.resolve_timeout, Dur::secs(120));
        let pd = &c.receivers[0].pagerduty_configs[0];
        assert_eq!(pd.url.as_ref().unwrap().0, "https://pd.example/v2/enqueue");
        assert_eq!(
            pd.routing_key.resolve().unwrap().0,
            "fedcba9876543210fedcba9876543210"
        );
        assert_eq!(c.receivers[0].dynatrace_configs[0].timeout_minutes, 60);
        assert_eq!(
            c.route.routes[0].matchers.to_string(),
            r#"{service=~"^(foo1|foo2)$"}"#
        );
        assert_eq!(c.inhibit_rules[0].all_target_matchers().len(), 1);
        let bad = AlertingConfig::from_yaml("route: {receiver: x}\nreceivers: [{name: x, dynatrace_configs: [{url: http://d, insecure: true, api_token: t, timeout: 7h}]}]");
        assert!(bad.unwrap_err().to_string().contains("between 1m and 360m"));
        let bad = AlertingConfig::from_yaml(
            "route: {receiver: x}\nreceivers: [{name: x, email_configs: []}]",
        );
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("unknown field `email_configs`"));
    }

    #[test]
    fn nested_errors_name_the_path() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Outer {
            http: BTreeMap<String, String>,
            alerting: AlertingConfig,
        }
        let text = format!(
            "http: {{}}\nalerting:\n{}",
            OK.replace("receiver: pager", "receiver: pagr")
                .replace('\n', "\n  ")
        );
        let e = crate::parse::<Outer>(&text, "agg.yaml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("agg.yaml:2:"), "{e}");
        assert!(
            e.contains(
                "route.routes[0].receiver: unknown receiver \"pagr\" (defined: default, pager)"
            ),
            "{e}"
        );
    }

    /// A receiver holding a secret talks https unless it says `insecure: true`.
    #[test]
    fn secret_carrying_urls_need_https() {
        let pd = |extra: &str| {
            format!("route: {{receiver: x}}\nreceivers:\n  - name: x\n    pagerduty_configs:\n      - {{routing_key: 0123456789abcdef0123456789abcdef{extra}}}\n")
        };
        let dt = |extra: &str| {
            format!("route: {{receiver: x}}\nreceivers:\n  - name: x\n    dynatrace_configs:\n      - {{url: http://dt.local, api_token: t{extra}}}\n")
        };
        for (text, want) in [
            (pd(", url: http://pd.local/v2/enqueue"), Some("receivers[0].pagerduty_configs[0].url: http://pd.local/v2/enqueue is not https://")),
            (format!("global: {{pagerduty_url: http://pd.local/}}\n{}", pd("")), Some("receivers[0].pagerduty_configs[0].url: http://pd.local/ is not https://")),
            (pd(", url: http://pd.local/v2/enqueue, insecure: true"), None),
            (pd(""), None),
            (dt(""), Some("<alerting>:5:7: receivers[0].dynatrace_configs[0]: url: http://dt.local is not https://")),
            (dt(", insecure: true"), None),
        ] {
            match (AlertingConfig::from_yaml(&text), want) {
                (Ok(_), None) => {}
                (Err(e), Some(want)) => assert!(e.to_string().contains(want), "{e}\nwant: {want}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn env_secrets_expand_once() {
        // A secret's own `$$` and `${` are part of the secret, not expanded again.
        std::env::set_var("EW_TEST_SECRET_X", "fedcba9876543210fedcba98765$${x}");
        let yaml = "route: {receiver: pd}\nreceivers:\n  - name: pd\n    pagerduty_configs:\n      - routing_key: ${env:EW_TEST_SECRET_X}\n";
        let c = AlertingConfig::from_yaml(yaml).unwrap();
        let key = &c.receivers[0].pagerduty_configs[0].routing_key;
        assert_eq!(key.resolve().unwrap().0, "fedcba9876543210fedcba98765$${x}");
        let e = AlertingConfig::from_yaml(
            &yaml.replace("EW_TEST_SECRET_X", "EW_TEST_SECRET_MISSING_Q"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("<alerting>:5:22: receivers[0].pagerduty_configs[0].routing_key: environment variable EW_TEST_SECRET_MISSING_Q is not set"),
            "{e}"
        );
    }
}
