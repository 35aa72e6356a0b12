//! A parsed scrape → one OTLP `ResourceMetrics` under the scope `edgewatch.scrape`,
//! plus Prometheus' staleness: series that were in the previous scrape of the target and
//! are not in this one get a point flagged `NO_RECORDED_VALUE` (OTLP's stale marker).
//!
//! | Prometheus | OTLP |
//! |---|---|
//! | counter (`foo_total` / `foo`) | Sum, cumulative, monotonic, named as the sample |
//! | gauge, untyped/unknown, info, stateset, `_created` | Gauge, named as the sample |
//! | histogram (`_bucket{le}`, `_sum`, `_count`) | explicit-bucket Histogram named as the family |
//! | summary (`{quantile}`, `_sum`, `_count`) | Summary named as the family |
//!
//! The aggregator writes scraped-origin metrics back under their original names, so a
//! histogram or summary is only converted when it comes back identical: every `le` /
//! `quantile` value written as Go formats floats, `+Inf` present and equal to `_count`,
//! cumulative counts non-decreasing, `_sum`/`_count` present where the converter would
//! write them. Otherwise (and for gauge histograms, which OTLP cannot carry) its samples
//! go as Gauges named as written: types are lost, series are exact.

use super::deadline::{Deadline, Expired};
use super::limits::{check_labels, LimitError};
use super::parse::{Exposition, Kind, Sample};
use crate::enrich::string_kv;
use edgewatch_config::collector::ScrapeLimits;
use edgewatch_prom::float::{format_g, parse_float};
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, summary_data_point::ValueAtQuantile, AggregationTemporality, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The InstrumentationScope name that tells the aggregator "this was scraped".
pub const SCRAPE_SCOPE: &str = "edgewatch.scrape";
/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`.
pub const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// Who the target is: the labels Prometheus would attach to every series.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetIdentity {
    /// `service.name` → `job`.
    pub job: String,
    /// `service.instance.id` → `instance` (`host:port`).
    pub instance: String,
    /// More target labels (e.g. `namespace`, `pod` for pod targets), added to every
    /// point; a scraped label of the same name becomes `exported_<name>`.
    pub labels: Vec<(String, String)>,
    /// More resource attributes (`model.name`, `model.version`, `k8s.pod.name`…).
    pub resource: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
enum StaleKind {
    Gauge,
    Counter,
    Histogram(Vec<f64>),
    Summary,
}

/// A series' identity for staleness: OTLP metric name and point attributes.
type SeriesKey = (String, Vec<(String, String)>);

/// What a target's previous scrape produced.
#[derive(Debug, Default)]
pub struct TargetState {
    series: HashMap<SeriesKey, (StaleKind, u64)>,
    /// Prometheus series (sample name + labels) of the previous scrape.
    samples: HashSet<(String, Vec<(String, String)>)>,
}

impl TargetState {
    pub fn series(&self) -> usize {
        self.series.len()
    }
}

/// Counts of one conversion.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Converted {
    /// Samples in the exposition (Prometheus' `scrape_samples_scraped`).
    pub samples: u64,
    /// Samples dropped: the same series twice in one scrape.
    pub duplicates: u64,
    /// Samples dropped: a label written twice (counted by the parser).
    pub label_clashes: u64,
    /// Histograms/summaries sent as gauges (not faithfully representable).
    pub untyped_fallbacks: u64,
    /// Series that were not in the previous scrape.
    pub series_added: u64,
    /// Stale markers emitted.
    pub stale: u64,
}

fn attrs_of(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string_kv(k, v)).collect()
}

/// Builds the resource of a target.
pub fn resource_of(t: &TargetIdentity) -> Resource {
    let mut attributes = vec![
        string_kv("service.name", &t.job),
        string_kv("service.instance.id", &t.instance),
    ];
    attributes.extend(t.resource.iter().map(|(k, v)| string_kv(k, v)));
    Resource {
        attributes,
        ..Default::default()
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCRAPE_SCOPE.to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        ..Default::default()
    }
}

/// Role of a sample inside its family.
enum Role {
    Counter,
    Gauge,
    Bucket,
    Sum,
    Count,
    Quantile,
}

fn classify<'a>(name: &'a str, types: &HashMap<String, Kind>) -> (&'a str, Kind, Role) {
    if let Some(&k) = types.get(name) {
        return match k {
            Kind::Counter => (name, k, Role::Counter),
            Kind::Summary => (name, k, Role::Quantile),
            _ => (name, k, Role::Gauge),
        };
    }
    let suffixes: [(&str, &[Kind], Role); 9] = [
        (
            "_bucket",
            &[Kind::Histogram, Kind::GaugeHistogram],
            Role::Bucket,
        ),
        ("_sum", &[Kind::Histogram, Kind::Summary], Role::Sum),
        ("_count", &[Kind::Histogram, Kind::Summary], Role::Count),
        ("_gsum", &[Kind::GaugeHistogram], Role::Sum),
        ("_gcount", &[Kind::GaugeHistogram], Role::Count),
        ("_total", &[Kind::Counter], Role::Counter),
        (
            "_created",
            &[Kind::Counter, Kind::Histogram, Kind::Summary],
            Role::Gauge,
        ),
        ("_info", &[Kind::Info], Role::Gauge),
        ("", &[], Role::Gauge),
    ];
    for (suffix, kinds, role) in suffixes {
        if suffix.is_empty() {
            break;
        }
        if let Some(base) = name.strip_suffix(suffix) {
            if let Some(&k) = types.get(base) {
                if kinds.contains(&k) {
                    return (base, k, role);
                }
            }
        }
    }
    (name, Kind::Unknown, Role::Gauge)
}

/// Samples of one histogram or summary series (its labels without `le`/`quantile`).
#[derive(Default)]
struct Group {
    family: String,
    kind: Option<Kind>,
    labels: Vec<(String, String)>,
    buckets: Vec<(String, f64)>,
    quantiles: Vec<(String, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
    timestamps: HashSet<Option<i64>>,
    /// For the fallback: the samples as written.
    raw: Vec<Sample>,
}

/// Output under construction: metrics by (name, type tag), in first-seen order.
#[derive(Default)]
struct Builder {
    metrics: Vec<Metric>,
    index: HashMap<(String, u8), usize>,
}

impl Builder {
    fn metric(
        &mut self,
        name: &str,
        tag: u8,
        help: &str,
        make: impl FnOnce() -> metric::Data,
    ) -> &mut metric::Data {
        let i = *self
            .index
            .entry((name.to_string(), tag))
            .or_insert_with(|| {
                self.metrics.push(Metric {
                    name: name.to_string(),
                    description: help.to_string(),
                    data: Some(make()),
                    ..Default::default()
                });
                self.metrics.len() - 1
            });
        self.metrics[i].data.as_mut().expect("data set")
    }

    fn gauge(&mut self, name: &str, help: &str, p: NumberDataPoint) {
        if let metric::Data::Gauge(g) =
            self.metric(name, 0, help, || metric::Data::Gauge(Gauge::default()))
        {
            g.data_points.push(p);
        }
    }

    fn counter(&mut self, name: &str, help: &str, p: NumberDataPoint) {
        let d = self.metric(name, 1, help, || {
            metric::Data::Sum(Sum {
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
                ..Default::default()
            })
        });
        if let metric::Data::Sum(s) = d {
            s.data_points.push(p);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, p: HistogramDataPoint) {
        let d = self.metric(name, 2, help, || {
            metric::Data::Histogram(Histogram {
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                ..Default::default()
            })
        });
        if let metric::Data::Histogram(h) = d {
            h.data_points.push(p);
        }
    }

    fn summary(&mut self, name: &str, help: &str, p: SummaryDataPoint) {
        if let metric::Data::Summary(s) =
            self.metric(name, 3, help, || metric::Data::Summary(Summary::default()))
        {
            s.data_points.push(p);
        }
    }
}

fn ns(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

fn number(labels: &[(String, String)], v: f64, ts: u64, start: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs_of(labels),
        start_time_unix_nano: start,
        time_unix_nano: ts,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

/// Applies the target's labels the way Prometheus does with `honor_labels: false`:
/// a scraped label that a target label would overwrite is kept as `exported_<name>`.
/// `None`: the result has a label name twice.
fn with_target_labels(
    mut labels: Vec<(String, String)>,
    target: &TargetIdentity,
) -> Option<Vec<(String, String)>> {
    for (k, _) in labels.iter_mut() {
        if target.labels.iter().any(|(t, _)| t == k) {
            k.insert_str(0, "exported_");
        }
    }
    labels.extend(target.labels.iter().cloned());
    labels.sort();
    if labels.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(labels)
}

/// Why a parsed scrape was not converted; `state` is as before.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    Expired(#[from] Expired),
}

/// Converts one successful scrape. `now_ms` is the scrape's start (Prometheus' sample
/// timestamp for samples without one). A sample over the label limits fails the
/// whole scrape, as in Prometheus; so does `deadline` passing. On success, updates
/// `state` and returns the metrics.
pub fn convert(
    exp: &Exposition,
    target: &TargetIdentity,
    state: &mut TargetState,
    now_ms: i64,
    duration_s: f64,
    limits: &ScrapeLimits,
    deadline: &Deadline,
) -> Result<(ResourceMetrics, Converted), ConvertError> {
    let mut c = Converted {
        samples: exp.samples.len() as u64,
        label_clashes: exp.label_clashes,
        ..Default::default()
    };
    let now = ns(now_ms);
    let mut scrape = Scrape::new(exp, state, now);
    let mut seen_samples: HashSet<(String, Vec<(String, String)>)> = HashSet::new();
    let mut ticker = deadline.ticker();
    for s in &exp.samples {
        ticker.tick()?;
        let Some(labels) = with_target_labels(s.labels.clone(), target) else {
            c.label_clashes += 1;
            continue;
        };
        check_labels(&s.name, &labels, target, limits)?;
        if !seen_samples.insert((s.name.clone(), labels.clone())) {
            c.duplicates += 1;
            continue;
        }
        scrape.add(s, labels);
    }
    c.untyped_fallbacks = scrape.finish_groups();
    let Scrape {
        mut b, new_series, ..
    } = scrape;

    c.series_added = seen_samples
        .iter()
        .filter(|k| !state.samples.contains(*k))
        .count() as u64;
    state.samples = seen_samples;
    let old = std::mem::take(&mut state.series);
    c.stale = stale_points(
        &mut b,
        old.into_iter().filter(|(k, _)| !new_series.contains_key(k)),
        now,
    );
    state.series = new_series;

    let post = c.samples - c.duplicates;
    report(
        &mut b,
        target,
        now,
        true,
        duration_s,
        c.samples as f64,
        post as f64,
        c.series_added as f64,
    );
    Ok((resource_metrics(target, b), c))
}

/// One scrape's conversion under way: counters and gauges go straight to the
/// output, histogram and summary samples are grouped per series first.
struct Scrape<'a> {
    exp: &'a Exposition,
    /// The previous scrape's series (for counters' start times).
    previous: &'a TargetState,
    now: u64,
    b: Builder,
    groups: Vec<Group>,
    group_index: HashMap<SeriesKey, usize>,
    new_series: HashMap<SeriesKey, (StaleKind, u64)>,
}

impl<'a> Scrape<'a> {
    fn new(exp: &'a Exposition, previous: &'a TargetState, now: u64) -> Self {
        Scrape {
            exp,
            previous,
            now,
            b: Builder::default(),
            groups: Vec::new(),
            group_index: HashMap::new(),
            new_series: HashMap::new(),
        }
    }

    fn help(&self, family: &str) -> &'a str {
        self.exp.help.get(family).map(String::as_str).unwrap_or("")
    }

    /// When the series `key` started: at its first scrape, kept from then on.
    fn start_of(&self, key: &SeriesKey) -> u64 {
        self.previous
            .series
            .get(key)
            .map(|x| x.1)
            .unwrap_or(self.now)
    }

    /// One sample, with the target's labels applied.
    fn add(&mut self, s: &Sample, labels: Vec<(String, String)>) {
        let (family, kind, role) = classify(&s.name, &self.exp.types);
        let help = self.help(family);
        match role {
            Role::Counter | Role::Gauge => {
                let ts = s.timestamp_ms.map(ns).unwrap_or(self.now);
                let key: SeriesKey = (s.name.clone(), labels);
                if matches!(role, Role::Counter) {
                    let start = self.start_of(&key);
                    let p = number(&key.1, s.value, ts, start);
                    self.b.counter(&s.name, help, p);
                    self.new_series.insert(key, (StaleKind::Counter, start));
                } else {
                    let p = number(&key.1, s.value, ts, 0);
                    self.b.gauge(&s.name, help, p);
                    self.new_series.insert(key, (StaleKind::Gauge, 0));
                }
            }
            Role::Bucket | Role::Sum | Role::Count | Role::Quantile => {
                self.add_to_group(s, labels, family, kind, role)
            }
        }
    }

    /// A histogram or summary sample: into the group of its series (its labels
    /// without `le` / `quantile`).
    fn add_to_group(
        &mut self,
        s: &Sample,
        labels: Vec<(String, String)>,
        family: &str,
        kind: Kind,
        role: Role,
    ) {
        let special = if matches!(role, Role::Bucket) {
            "le"
        } else {
            "quantile"
        };
        let mut rest = labels.clone();
        let mut special_value = None;
        if matches!(role, Role::Bucket | Role::Quantile) {
            if let Some(pos) = rest.iter().position(|(k, _)| k == special) {
                special_value = Some(rest.remove(pos).1);
            }
        }
        let groups = &mut self.groups;
        let gi = *self
            .group_index
            .entry((family.to_string(), rest.clone()))
            .or_insert_with(|| {
                groups.push(Group {
                    family: family.to_string(),
                    kind: Some(kind),
                    labels: rest,
                    ..Default::default()
                });
                groups.len() - 1
            });
        let g = &mut self.groups[gi];
        g.timestamps.insert(s.timestamp_ms);
        g.raw.push(Sample {
            labels,
            ..s.clone()
        });
        match (role, special_value) {
            (Role::Bucket, Some(le)) => g.buckets.push((le, s.value)),
            (Role::Quantile, Some(q)) => g.quantiles.push((q, s.value)),
            (Role::Sum, _) => g.sum = Some(s.value),
            (Role::Count, _) => g.count = Some(s.value),
            // A bucket without `le` / a summary sample without `quantile`:
            // not representable; the fallback sends it as written.
            _ => g.kind = None,
        }
    }

    /// Emits each group as one histogram or summary point, or, when it is not
    /// representable as one, its samples as gauges. Returns how many fell back.
    fn finish_groups(&mut self) -> u64 {
        let mut fallbacks = 0;
        for g in std::mem::take(&mut self.groups) {
            let ts = g
                .timestamps
                .iter()
                .next()
                .copied()
                .flatten()
                .map(ns)
                .unwrap_or(self.now);
            let key: SeriesKey = (g.family.clone(), g.labels.clone());
            let start = self.start_of(&key);
            let single_ts = g.timestamps.len() == 1;
            let help = self.help(&g.family);
            let done = match g.kind {
                Some(Kind::Histogram) if single_ts => histogram_point(&g, ts, start).map(|p| {
                    let bounds = p.explicit_bounds.clone();
                    self.b.histogram(&g.family, help, p);
                    self.new_series
                        .insert(key.clone(), (StaleKind::Histogram(bounds), start));
                }),
                Some(Kind::Summary) if single_ts => summary_point(&g, ts, start).map(|p| {
                    self.b.summary(&g.family, help, p);
                    self.new_series
                        .insert(key.clone(), (StaleKind::Summary, start));
                }),
                _ => None,
            };
            if done.is_none() {
                fallbacks += 1;
                for s in &g.raw {
                    let ts = s.timestamp_ms.map(ns).unwrap_or(self.now);
                    self.b
                        .gauge(&s.name, help, number(&s.labels, s.value, ts, 0));
                    self.new_series
                        .insert((s.name.clone(), s.labels.clone()), (StaleKind::Gauge, 0));
                }
            }
        }
        fallbacks
    }
}

/// A failed scrape (or a target that went away, `report: false`): `up` 0 and stale
/// markers for every series of the previous scrape.
pub fn failed(
    target: &TargetIdentity,
    state: &mut TargetState,
    now_ms: i64,
    duration_s: f64,
    report_up: bool,
) -> (ResourceMetrics, u64) {
    let now = ns(now_ms);
    let mut b = Builder::default();
    let old = std::mem::take(&mut state.series);
    state.samples.clear();
    let stale = stale_points(&mut b, old.into_iter(), now);
    if report_up {
        report(&mut b, target, now, false, duration_s, 0.0, 0.0, 0.0);
    } else {
        // The target is gone: its own `up` & co. go stale too.
        for name in REPORT_NAMES {
            let mut p = number(&target.labels, 0.0, now, 0);
            p.value = None;
            p.flags = FLAG_NO_RECORDED_VALUE;
            b.gauge(name, "", p);
        }
    }
    (resource_metrics(target, b), stale)
}

const REPORT_NAMES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

#[allow(clippy::too_many_arguments)]
fn report(
    b: &mut Builder,
    target: &TargetIdentity,
    now: u64,
    up: bool,
    duration_s: f64,
    scraped: f64,
    post: f64,
    added: f64,
) {
    let values = [if up { 1.0 } else { 0.0 }, duration_s, scraped, post, added];
    for (name, v) in REPORT_NAMES.iter().zip(values) {
        b.gauge(name, "", number(&target.labels, v, now, 0));
    }
}

fn stale_points(
    b: &mut Builder,
    gone: impl Iterator<Item = (SeriesKey, (StaleKind, u64))>,
    now: u64,
) -> u64 {
    let mut n = 0;
    for ((name, labels), (kind, start)) in gone {
        n += 1;
        let attributes = attrs_of(&labels);
        match kind {
            StaleKind::Gauge | StaleKind::Counter => {
                let p = NumberDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    flags: FLAG_NO_RECORDED_VALUE,
                    ..Default::default()
                };
                if kind == StaleKind::Counter {
                    b.counter(&name, "", p)
                } else {
                    b.gauge(&name, "", p)
                }
            }
            StaleKind::Histogram(bounds) => b.histogram(
                &name,
                "",
                HistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    explicit_bounds: bounds,
                    flags: FLAG_NO_RECORDED_VALUE,
                    ..Default::default()
                },
            ),
            StaleKind::Summary => b.summary(
                &name,
                "",
                SummaryDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    flags: FLAG_NO_RECORDED_VALUE,
                    ..Default::default()
                },
            ),
        }
    }
    n
}

fn resource_metrics(target: &TargetIdentity, b: Builder) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource_of(target)),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(scope()),
            metrics: b.metrics,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn as_count(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 1.8e19).then_some(v as u64)
}

/// `Some` only if the aggregator will write back exactly the samples of the group.
fn histogram_point(g: &Group, ts: u64, start: u64) -> Option<HistogramDataPoint> {
    let count = as_count(g.count?)?;
    let mut buckets: Vec<(f64, f64)> = Vec::with_capacity(g.buckets.len());
    let mut saw_inf = false;
    for (le, v) in &g.buckets {
        let b = parse_float(le)?;
        if b == f64::INFINITY {
            if le != "+Inf" || as_count(*v)? != count {
                return None;
            }
            saw_inf = true;
            continue;
        }
        if b.is_nan() || format_g(b) != *le {
            return None;
        }
        buckets.push((b, *v));
    }
    if !saw_inf {
        return None;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if buckets.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    let mut counts = Vec::with_capacity(buckets.len() + 1);
    let mut prev = 0u64;
    for (_, v) in &buckets {
        let cum = as_count(*v)?;
        counts.push(cum.checked_sub(prev)?);
        prev = cum;
    }
    counts.push(count.checked_sub(prev)?);
    Some(HistogramDataPoint {
        attributes: attrs_of(&g.labels),
        start_time_unix_nano: start,
        time_unix_nano: ts,
        count,
        sum: g.sum,
        bucket_counts: counts,
        explicit_bounds: buckets.iter().map(|b| b.0).collect(),
        ..Default::default()
    })
}

fn summary_point(g: &Group, ts: u64, start: u64) -> Option<SummaryDataPoint> {
    let count = as_count(g.count?)?;
    let sum = g.sum?;
    let mut qs = BTreeMap::new();
    for (q, v) in &g.quantiles {
        let qf = parse_float(q)?;
        if !(0.0..=1.0).contains(&qf) || format_g(qf) != *q {
            return None;
        }
        if qs
            .insert(
                q.clone(),
                ValueAtQuantile {
                    quantile: qf,
                    value: *v,
                },
            )
            .is_some()
        {
            return None;
        }
    }
    let mut quantile_values: Vec<ValueAtQuantile> = qs.into_values().collect();
    quantile_values.sort_by(|a, b| a.quantile.total_cmp(&b.quantile));
    Some(SummaryDataPoint {
        attributes: attrs_of(&g.labels),
        start_time_unix_nano: start,
        time_unix_nano: ts,
        count,
        sum,
        quantile_values,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::parse::{parse, Format};
    use super::*;

    fn target() -> TargetIdentity {
        TargetIdentity {
            job: "prometheus".into(),
            instance: "127.0.0.1:8002".into(),
            ..Default::default()
        }
    }

    /// [`convert`] without limits or deadline.
    fn convert_all(
        exp: &Exposition,
        target: &TargetIdentity,
        state: &mut TargetState,
        now_ms: i64,
        duration_s: f64,
    ) -> (ResourceMetrics, Converted) {
        let none = ScrapeLimits::default();
        convert(
            exp,
            target,
            state,
            now_ms,
            duration_s,
            &none,
            &Deadline::none(),
        )
        .unwrap()
    }

    /// Over a label limit, the scrape fails and the target's state is untouched (the
    /// caller marks the previous scrape's series stale, as after any failure).
    #[test]
    fn a_sample_over_a_label_limit_fails_the_scrape_and_keeps_the_state() {
        let mut st = TargetState::default();
        convert_all(
            &parse(OVMS, Format::Text).unwrap(),
            &target(),
            &mut st,
            1,
            0.0,
        );
        let before = st.series();
        let exp = parse("ok 1\nwide{a=\"1\",b=\"2\"} 1\n", Format::Text).unwrap();
        let limits = ScrapeLimits {
            label_limit: 4,
            ..Default::default()
        };
        let e = convert(&exp, &target(), &mut st, 2, 0.0, &limits, &Deadline::none()).unwrap_err();
        assert!(
            matches!(&e, ConvertError::Limit(l) if l.reason() == "label_limit"),
            "{e}"
        );
        assert_eq!(st.series(), before);
        // The target's labels count too: `namespace` makes `ok` five labels.
        let mut t = target();
        t.labels.push(("namespace".into(), "ns".into()));
        let exp = parse("ok{a=\"1\"} 1\n", Format::Text).unwrap();
        let r = convert(&exp, &t, &mut st, 3, 0.0, &limits, &Deadline::none());
        assert!(r.is_err());
    }

    #[test]
    fn conversion_stops_at_the_deadline() {
        let exp = parse(OVMS, Format::Text).unwrap();
        let mut st = TargetState::default();
        let none = ScrapeLimits::default();
        let past = Deadline::at(std::time::Instant::now());
        let r = convert(&exp, &target(), &mut st, 1, 0.0, &none, &past);
        assert_eq!(r.unwrap_err(), ConvertError::Expired(Expired));
        assert_eq!(st.series(), 0);
    }

    fn find<'a>(rm: &'a ResourceMetrics, name: &str) -> &'a Metric {
        rm.scope_metrics[0]
            .metrics
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
    }

    const OVMS: &str = "# HELP ovms_requests_success Number of successful requests to a model or a DAG.
# TYPE ovms_requests_success counter
ovms_requests_success{api=\"KServe\",interface=\"REST\",method=\"ModelInfer\",name=\"housing\",version=\"1\"} 42
# HELP ovms_request_time_us Processing time of requests to a model or a DAG.
# TYPE ovms_request_time_us histogram
ovms_request_time_us_bucket{interface=\"REST\",name=\"housing\",version=\"1\",le=\"10\"} 0
ovms_request_time_us_bucket{interface=\"REST\",name=\"housing\",version=\"1\",le=\"18\"} 3
ovms_request_time_us_bucket{interface=\"REST\",name=\"housing\",version=\"1\",le=\"+Inf\"} 5
ovms_request_time_us_sum{interface=\"REST\",name=\"housing\",version=\"1\"} 77
ovms_request_time_us_count{interface=\"REST\",name=\"housing\",version=\"1\"} 5
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile=\"0\"} 1e-05
go_gc_duration_seconds{quantile=\"0.5\"} 2e-05
go_gc_duration_seconds{quantile=\"1\"} 0.001
go_gc_duration_seconds_sum 0.01
go_gc_duration_seconds_count 12
# TYPE ovms_current_requests gauge
ovms_current_requests{name=\"housing\"} 2
untyped_thing 7
";

    #[test]
    fn types_map_to_otlp() {
        let exp = parse(OVMS, Format::Text).unwrap();
        let mut st = TargetState::default();
        let (rm, c) = convert_all(&exp, &target(), &mut st, 1_700_000_000_000, 0.01);
        assert_eq!(c.samples, 13);
        assert_eq!(c.untyped_fallbacks, 0);
        assert_eq!(
            rm.scope_metrics[0].scope.as_ref().unwrap().name,
            SCRAPE_SCOPE
        );
        let Some(metric::Data::Sum(s)) = &find(&rm, "ovms_requests_success").data else {
            panic!("sum")
        };
        assert!(s.is_monotonic);
        let Some(metric::Data::Histogram(h)) = &find(&rm, "ovms_request_time_us").data else {
            panic!("hist")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (
                p.explicit_bounds.clone(),
                p.bucket_counts.clone(),
                p.count,
                p.sum
            ),
            (vec![10.0, 18.0], vec![0, 3, 2], 5, Some(77.0))
        );
        assert_eq!(p.attributes.len(), 3);
        let Some(metric::Data::Summary(s)) = &find(&rm, "go_gc_duration_seconds").data else {
            panic!("summary")
        };
        assert_eq!(s.data_points[0].quantile_values.len(), 3);
        assert!(matches!(
            find(&rm, "ovms_current_requests").data,
            Some(metric::Data::Gauge(_))
        ));
        assert!(matches!(
            find(&rm, "untyped_thing").data,
            Some(metric::Data::Gauge(_))
        ));
        let Some(metric::Data::Gauge(up)) = &find(&rm, "up").data else {
            panic!("up")
        };
        assert_eq!(
            up.data_points[0].value,
            Some(number_data_point::Value::AsDouble(1.0))
        );
        assert_eq!(c.series_added, 13);
        assert_eq!(st.series(), 5);
    }

    #[test]
    fn unfaithful_histograms_fall_back_to_gauges() {
        // `le="1.0"` would come back as `le="1"`; a missing +Inf would be invented.
        for text in [
            "# TYPE h histogram\nh_bucket{le=\"1.0\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 3\nh_count 2\n",
            "# TYPE h histogram\nh_bucket{le=\"1\"} 3\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n",
            "# TYPE h summary\nh{quantile=\"0.50\"} 1\nh_sum 3\nh_count 2\n",
        ] {
            let exp = parse(text, Format::Text).unwrap();
            let (rm, c) = convert_all(&exp, &target(), &mut TargetState::default(), 1, 0.0);
            assert_eq!(c.untyped_fallbacks, 1, "{text}");
            let names: Vec<_> = rm.scope_metrics[0].metrics.iter().map(|m| m.name.as_str()).collect();
            assert!(names.contains(&"h_sum") && names.contains(&"h_count"), "{names:?}");
        }
    }

    #[test]
    fn staleness_and_duplicates() {
        let mut st = TargetState::default();
        let exp = parse("a 1\nb{x=\"1\"} 2\nb{x=\"1\"} 3\n", Format::Text).unwrap();
        let (_, c) = convert_all(&exp, &target(), &mut st, 1, 0.0);
        assert_eq!(c.duplicates, 1);
        let exp = parse("a 1\n", Format::Text).unwrap();
        let (rm, c) = convert_all(&exp, &target(), &mut st, 2, 0.0);
        assert_eq!(c.stale, 1);
        let Some(metric::Data::Gauge(g)) = &find(&rm, "b").data else {
            panic!("b")
        };
        assert_eq!(g.data_points[0].flags, FLAG_NO_RECORDED_VALUE);
        assert_eq!(g.data_points[0].value, None);
        let (rm, stale) = failed(&target(), &mut st, 3, 0.0, true);
        assert_eq!(stale, 1);
        let Some(metric::Data::Gauge(up)) = &find(&rm, "up").data else {
            panic!("up")
        };
        assert_eq!(
            up.data_points[0].value,
            Some(number_data_point::Value::AsDouble(0.0))
        );
    }

    #[test]
    fn target_labels_rename_scraped_ones() {
        let t = TargetIdentity {
            labels: vec![("pod".into(), "p-1".into())],
            ..target()
        };
        let exp = parse("a{pod=\"inner\"} 1\n", Format::Text).unwrap();
        let (rm, _) = convert_all(&exp, &t, &mut TargetState::default(), 1, 0.0);
        let Some(metric::Data::Gauge(g)) = &find(&rm, "a").data else {
            panic!("a")
        };
        let keys: Vec<_> = g.data_points[0]
            .attributes
            .iter()
            .map(|k| k.key.as_str())
            .collect();
        assert_eq!(keys, vec!["exported_pod", "pod"]);
    }
}
