//! OTLP metrics → Prometheus series, written into the [`Store`].
//!
//! Follows the OTel specification compatibility/prometheus_and_openmetrics.md
//! ("OTLP Metric points to Prometheus") and the Prometheus/OTel Collector
//! translator where the spec leaves room:
//!
//! | OTLP | Prometheus |
//! |---|---|
//! | Gauge | gauge (unit `1` → `_ratio`) |
//! | Sum, cumulative, monotonic | counter `<name>_total` |
//! | Sum, cumulative, non-monotonic | gauge |
//! | Sum, delta | accumulated to cumulative ([`delta`]), then as above |
//! | Histogram (cumulative or accumulated delta) | histogram `_bucket{le}` (cumulative, incl. `+Inf`), `_sum`, `_count` |
//! | Summary | summary `{quantile}`, `_sum`, `_count` |
//! | ExponentialHistogram | **dropped** and counted (`reason="exponential_histogram"`) |
//!
//! Labels: point attributes (keys sanitised, colliding keys' values joined
//! with `;` in order of the original keys, empty values dropped), then
//! `otel_scope_name`/`otel_scope_version`, then `job`
//! (`service.namespace/service.name` or `service.name`), `instance`
//! (`service.instance.id`), `cluster` (`k8s.cluster.name`), `node`
//! (`k8s.node.name`) — later ones win on a name clash. Other resource
//! attributes go to one `target_info` gauge (value 1) per resource.
//!
//! Scraped-origin metrics (InstrumentationScope name `edgewatch.scrape`)
//! come out as Prometheus would have stored the scrape: original metric and
//! label names (only characters Prometheus' classic rules reject are
//! replaced), no suffixes, no scope labels, no `target_info`; `job`
//! (`service.name` alone: the scrape job), `instance`
//! (`service.instance.id`), `cluster`, `node` are attached like target
//! labels, and a scraped label of the same name is kept as
//! `exported_<name>` (Prometheus' `honor_labels: false` behaviour).
//! A counter keeps its scraped name (`ovms_requests_success`, no `_total`).
//!
//! Other rules: a point's `time_unix_nano` becomes the sample timestamp (ms);
//! 0 means "now". Points flagged `NO_RECORDED_VALUE` write nothing (no stale
//! marker) and count as accepted. NaN/±Inf values pass through. Every dropped
//! point is counted in `edgewatch_convert_dropped_points_total{reason}` and
//! in [`IngestOutcome::dropped_points`]; converted points in
//! `edgewatch_convert_points_total`.

pub mod attrs;
pub mod delta;
pub mod names;

use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric::Data, number_data_point, AggregationTemporality, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint,
};

use crate::expose::format::go_float_string;
use crate::store::{FamilyId, MetricType, Store, STALE_NAN};
use attrs::any_value_string;
use delta::DeltaState;
use names::NameKind;

/// The InstrumentationScope name the collector's Prometheus scrape receiver
/// sets on metrics it scraped.
pub const SCRAPE_SCOPE: &str = "edgewatch.scrape";

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the OTLP stale marker, written to the
/// store as Prometheus' stale NaN so the series stops being served at once.
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// Resource attributes turned into labels of every series (not target_info).
const PROMOTED: &[&str] = &[
    "service.name",
    "service.namespace",
    "service.instance.id",
    "k8s.cluster.name",
    "k8s.node.name",
    "model.name",
    "model.version",
];

/// What one request produced. Points with the `NO_RECORDED_VALUE` flag are
/// counted as accepted (they are valid; they just carry no sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted_points: u64,
    pub dropped_points: u64,
}

/// Why a data point was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    EmptyName,
    InvalidName,
    ExponentialHistogram,
    UnspecifiedTemporality,
    InvalidHistogram,
    MissingValue,
    DeltaOutOfOrder,
}

impl DropReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::EmptyName => "empty_name",
            DropReason::InvalidName => "invalid_name",
            DropReason::ExponentialHistogram => "exponential_histogram",
            DropReason::UnspecifiedTemporality => "unspecified_temporality",
            DropReason::InvalidHistogram => "invalid_histogram",
            DropReason::MissingValue => "missing_value",
            DropReason::DeltaOutOfOrder => "delta_out_of_order",
        }
    }
}

/// Converts OTLP requests into store writes. Holds the delta→cumulative
/// state; `Send + Sync`.
pub struct Converter {
    delta: DeltaState,
    points: prometheus::IntCounter,
    dropped: prometheus::IntCounterVec,
    out_of_order: prometheus::IntCounter,
}

type Labels = Vec<(String, String)>;

/// Per-resource context.
struct Target {
    /// job, instance, cluster, node (non-empty only).
    labels: Labels,
    /// The same for scraped-origin series: job is `service.name` alone (the
    /// scrape job name the receiver put there).
    scraped_labels: Labels,
    /// `model`, `model_version` from the collector's model enrichment: added only
    /// where the series has no label of that name (Triton's own `model` wins).
    defaults: Labels,
}

/// Per-request counters.
#[derive(Default)]
struct Tally {
    accepted: u64,
    dropped: Vec<(DropReason, u64)>,
}

impl Tally {
    fn drop(&mut self, r: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(x, _)| *x == r) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((r, n)),
        }
    }
}

impl Converter {
    /// A converter with the default 5 min delta-state expiry; registers
    /// `edgewatch_convert_points_total` and
    /// `edgewatch_convert_dropped_points_total{reason}` in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Self {
        Self::with_staleness(registry, Duration::from_secs(300))
    }

    /// Like [`Converter::new`], expiring delta state after `staleness`
    /// (use the store's staleness).
    pub fn with_staleness(registry: &prometheus::Registry, staleness: Duration) -> Self {
        let points = prometheus::IntCounter::new(
            "edgewatch_convert_points_total",
            "OTLP data points converted into Prometheus samples.",
        )
        .expect("valid metric");
        let dropped = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "edgewatch_convert_dropped_points_total",
                "OTLP data points dropped by the conversion, by reason.",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let out_of_order = prometheus::IntCounter::new(
            "edgewatch_store_out_of_order_samples_total",
            "Samples ignored because the store held a newer one for the series.",
        )
        .expect("valid metric");
        for c in [
            Box::new(points.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(dropped.clone()),
            Box::new(out_of_order.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!(error = %e, "registering converter metrics");
            }
        }
        Self {
            delta: DeltaState::new(staleness.as_millis().min(i64::MAX as u128) as i64),
            points,
            dropped,
            out_of_order,
        }
    }

    /// Number of series with delta→cumulative state held.
    pub fn delta_series(&self) -> usize {
        self.delta.len()
    }

    /// Converts one request into store writes.
    pub fn ingest(
        &self,
        req: &ExportMetricsServiceRequest,
        store: &Store,
        now_ms: i64,
    ) -> IngestOutcome {
        self.delta.maybe_expire(now_ms);
        let mut t = Tally::default();
        for rm in &req.resource_metrics {
            let res_attrs: &[KeyValue] = rm
                .resource
                .as_ref()
                .map(|r| &r.attributes[..])
                .unwrap_or(&[]);
            let target = target_of(res_attrs);
            let mut native = false;
            for sm in &rm.scope_metrics {
                let scope = sm.scope.as_ref();
                let scope_name = scope.map(|s| s.name.as_str()).unwrap_or("");
                let scraped = scope_name == SCRAPE_SCOPE;
                let mut scope_labels: Labels = Vec::new();
                if !scraped {
                    native |= !sm.metrics.is_empty();
                    if !scope_name.is_empty() {
                        scope_labels.push(("otel_scope_name".into(), scope_name.into()));
                    }
                    let v = scope.map(|s| s.version.as_str()).unwrap_or("");
                    if !v.is_empty() {
                        scope_labels.push(("otel_scope_version".into(), v.into()));
                    }
                }
                let ctx = Ctx {
                    store,
                    out_of_order: std::cell::Cell::new(0),
                    now_ms,
                    scraped,
                    scope_labels: &scope_labels,
                    target: &target,
                };
                for m in &sm.metrics {
                    self.metric(&ctx, m, &mut t);
                }
                self.out_of_order.inc_by(ctx.out_of_order.get());
            }
            if native {
                write_target_info(store, res_attrs, &target, now_ms);
            }
        }
        self.points.inc_by(t.accepted);
        let mut dropped = 0;
        for (r, n) in &t.dropped {
            self.dropped.with_label_values(&[r.as_str()]).inc_by(*n);
            dropped += n;
        }
        IngestOutcome {
            accepted_points: t.accepted,
            dropped_points: dropped,
        }
    }

    fn metric(&self, ctx: &Ctx<'_>, m: &Metric, t: &mut Tally) {
        let Some(data) = &m.data else { return };
        let npoints = match data {
            Data::Gauge(g) => g.data_points.len(),
            Data::Sum(s) => s.data_points.len(),
            Data::Histogram(h) => h.data_points.len(),
            Data::ExponentialHistogram(h) => h.data_points.len(),
            Data::Summary(s) => s.data_points.len(),
        } as u64;
        if m.name.is_empty() {
            t.drop(DropReason::EmptyName, npoints);
            return;
        }
        // (type, naming kind, delta?)
        let (mtype, kind, delta) = match data {
            Data::Gauge(_) => (MetricType::Gauge, NameKind::Gauge, false),
            Data::Sum(s) => {
                let delta = match temporality(s.aggregation_temporality) {
                    Some(d) => d,
                    None => return t.drop(DropReason::UnspecifiedTemporality, npoints),
                };
                if s.is_monotonic {
                    (MetricType::Counter, NameKind::Counter, delta)
                } else {
                    (MetricType::Gauge, NameKind::Other, delta)
                }
            }
            Data::Histogram(h) => match temporality(h.aggregation_temporality) {
                Some(d) => (MetricType::Histogram, NameKind::Other, d),
                None => return t.drop(DropReason::UnspecifiedTemporality, npoints),
            },
            Data::Summary(_) => (MetricType::Summary, NameKind::Other, false),
            Data::ExponentialHistogram(_) => {
                return t.drop(DropReason::ExponentialHistogram, npoints);
            }
        };
        let (name, unit) = if ctx.scraped {
            (names::scraped_metric_name(&m.name), String::new())
        } else {
            let (main, per) = names::unit_words(&m.unit);
            let unit = match (main.is_empty(), per.is_empty()) {
                (false, false) => format!("{main}_per_{per}"),
                (false, true) => main,
                (true, false) => format!("per_{per}"),
                (true, true) => String::new(),
            };
            (names::metric_name(&m.name, &m.unit, kind), unit)
        };
        let Some(name) = name else {
            return t.drop(DropReason::InvalidName, npoints);
        };
        let fam = ctx.store.family(&name, mtype, &m.description, &unit);
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number(ctx, fam, &name, p, false, t);
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    self.number(ctx, fam, &name, p, delta, t);
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    self.histogram(ctx, fam, &name, p, delta, t);
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    self.summary(ctx, fam, &name, p, t);
                }
            }
            Data::ExponentialHistogram(_) => {}
        }
    }

    fn number(
        &self,
        ctx: &Ctx<'_>,
        fam: FamilyId,
        name: &str,
        p: &NumberDataPoint,
        delta: bool,
        t: &mut Tally,
    ) {
        if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
            let attrs = ctx.point_labels(&p.attributes);
            ctx.end(
                fam,
                name,
                &ctx.merge(&attrs, None),
                ctx.ts(p.time_unix_nano),
            );
            t.accepted += 1;
            return;
        }
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => return t.drop(DropReason::MissingValue, 1),
        };
        let attrs = ctx.point_labels(&p.attributes);
        let labels = ctx.merge(&attrs, None);
        let ts = ctx.ts(p.time_unix_nano);
        let v = if delta {
            let key = series_key(name, &labels);
            match self
                .delta
                .add_sum(&key, v, ctx.time_ns(p.time_unix_nano), ctx.now_ms)
            {
                Some(v) => v,
                None => return t.drop(DropReason::DeltaOutOfOrder, 1),
            }
        } else {
            v
        };
        ctx.write(fam, name, &labels, v, ts, ctx.now_ms);
        t.accepted += 1;
    }

    fn histogram(
        &self,
        ctx: &Ctx<'_>,
        fam: FamilyId,
        name: &str,
        p: &HistogramDataPoint,
        delta: bool,
        t: &mut Tally,
    ) {
        if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
            // A stale marker names its bounds, so every bucket series can be ended.
            let attrs = ctx.point_labels(&p.attributes);
            let ts = ctx.ts(p.time_unix_nano);
            let bucket = format!("{name}_bucket");
            let les = p
                .explicit_bounds
                .iter()
                .filter(|b| b.is_finite())
                .map(|b| go_float_string(*b));
            for le in les.chain(std::iter::once("+Inf".to_string())) {
                ctx.end(fam, &bucket, &ctx.merge(&attrs, Some(("le", &le))), ts);
            }
            ctx.end_sum_count(fam, name, &ctx.merge(&attrs, None), ts);
            t.accepted += 1;
            return;
        }
        let bounds = &p.explicit_bounds;
        let valid = (p.bucket_counts.is_empty() || p.bucket_counts.len() == bounds.len() + 1)
            && bounds.iter().all(|b| !b.is_nan())
            && bounds.windows(2).all(|w| w[0] < w[1]);
        if !valid {
            return t.drop(DropReason::InvalidHistogram, 1);
        }
        let attrs = ctx.point_labels(&p.attributes);
        let base = ctx.merge(&attrs, None);
        let ts = ctx.ts(p.time_unix_nano);
        let (counts, sum, count) = if delta {
            let key = series_key(name, &base);
            let d = delta::HistTotals {
                counts: p.bucket_counts.clone(),
                sum: p.sum.unwrap_or(0.0),
                count: p.count,
            };
            match self
                .delta
                .add_hist(&key, bounds, d, ctx.time_ns(p.time_unix_nano), ctx.now_ms)
            {
                Some(h) => (h.counts, p.sum.map(|_| h.sum), h.count),
                None => return t.drop(DropReason::DeltaOutOfOrder, 1),
            }
        } else {
            (p.bucket_counts.clone(), p.sum, p.count)
        };
        let bucket = format!("{name}_bucket");
        let mut cum: u64 = 0;
        if !counts.is_empty() {
            for (i, b) in bounds.iter().enumerate() {
                cum = cum.saturating_add(counts[i]);
                if *b == f64::INFINITY {
                    continue; // the +Inf bucket is written below from the count
                }
                let le = go_float_string(*b);
                let labels = ctx.merge(&attrs, Some(("le", &le)));
                ctx.write(fam, &bucket, &labels, cum as f64, ts, ctx.now_ms);
            }
        }
        let labels = ctx.merge(&attrs, Some(("le", "+Inf")));
        ctx.write(fam, &bucket, &labels, count as f64, ts, ctx.now_ms);
        if let Some(sum) = sum {
            ctx.write(fam, &format!("{name}_sum"), &base, sum, ts, ctx.now_ms);
        }
        ctx.write(
            fam,
            &format!("{name}_count"),
            &base,
            count as f64,
            ts,
            ctx.now_ms,
        );
        t.accepted += 1;
    }

    fn summary(
        &self,
        ctx: &Ctx<'_>,
        fam: FamilyId,
        name: &str,
        p: &SummaryDataPoint,
        t: &mut Tally,
    ) {
        if p.flags & FLAG_NO_RECORDED_VALUE != 0 {
            // Quantile series not named in the marker go stale with the store's
            // staleness period instead.
            let attrs = ctx.point_labels(&p.attributes);
            let ts = ctx.ts(p.time_unix_nano);
            for q in &p.quantile_values {
                let qs = go_float_string(q.quantile);
                ctx.end(fam, name, &ctx.merge(&attrs, Some(("quantile", &qs))), ts);
            }
            ctx.end_sum_count(fam, name, &ctx.merge(&attrs, None), ts);
            t.accepted += 1;
            return;
        }
        let attrs = ctx.point_labels(&p.attributes);
        let base = ctx.merge(&attrs, None);
        let ts = ctx.ts(p.time_unix_nano);
        for q in &p.quantile_values {
            let qs = go_float_string(q.quantile);
            let labels = ctx.merge(&attrs, Some(("quantile", &qs)));
            ctx.write(fam, name, &labels, q.value, ts, ctx.now_ms);
        }
        ctx.write(fam, &format!("{name}_sum"), &base, p.sum, ts, ctx.now_ms);
        ctx.write(
            fam,
            &format!("{name}_count"),
            &base,
            p.count as f64,
            ts,
            ctx.now_ms,
        );
        t.accepted += 1;
    }
}

/// `Some(true)` for delta, `Some(false)` for cumulative, `None` unspecified.
fn temporality(t: i32) -> Option<bool> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Delta) => Some(true),
        Ok(AggregationTemporality::Cumulative) => Some(false),
        _ => None,
    }
}

struct Ctx<'a> {
    store: &'a Store,
    /// Samples the store ignored as older than the one it holds.
    out_of_order: std::cell::Cell<u64>,
    now_ms: i64,
    scraped: bool,
    scope_labels: &'a Labels,
    target: &'a Target,
}

impl Ctx<'_> {
    /// Ends a series with a stale marker.
    fn end(&self, fam: FamilyId, name: &str, labels: &[(&str, &str)], ts: i64) {
        self.write(fam, name, labels, STALE_NAN, ts, self.now_ms);
    }

    fn end_sum_count(&self, fam: FamilyId, name: &str, base: &[(&str, &str)], ts: i64) {
        for suffix in ["_sum", "_count"] {
            self.end(fam, &format!("{name}{suffix}"), base, ts);
        }
    }

    fn write(
        &self,
        fam: FamilyId,
        name: &str,
        labels: &[(&str, &str)],
        value: f64,
        ts: i64,
        now_ms: i64,
    ) {
        if self.store.write(fam, name, labels, value, ts, now_ms)
            == crate::store::WriteOutcome::OutOfOrder
        {
            self.out_of_order.set(self.out_of_order.get() + 1);
        }
    }

    fn ts(&self, time_unix_nano: u64) -> i64 {
        if time_unix_nano == 0 {
            self.now_ms
        } else {
            (time_unix_nano / 1_000_000) as i64
        }
    }

    fn time_ns(&self, time_unix_nano: u64) -> u64 {
        if time_unix_nano == 0 {
            (self.now_ms.max(0) as u64).saturating_mul(1_000_000)
        } else {
            time_unix_nano
        }
    }

    fn point_labels(&self, attrs: &[KeyValue]) -> Labels {
        if self.scraped {
            let mut out = sanitized(attrs, names::scraped_label_name);
            for (k, _) in out.iter_mut() {
                if matches!(k.as_str(), "job" | "instance" | "cluster" | "node") {
                    k.insert_str(0, "exported_");
                }
            }
            // An `exported_x` may now collide with a scraped `exported_x`;
            // Prometheus would prefix again; keep it simple: join like OTLP.
            join_collisions(out)
        } else {
            sanitized(attrs, names::label_name)
        }
    }

    /// Final label set (sorted by name, unique names, no empty values):
    /// model defaults < attributes < scope labels < target labels < `extra`
    /// (`le`/`quantile`).
    fn merge<'s>(
        &'s self,
        attrs: &'s Labels,
        extra: Option<(&'s str, &'s str)>,
    ) -> Vec<(&'s str, &'s str)> {
        let mut v: Vec<(&str, &str)> = Vec::with_capacity(
            attrs.len() + self.scope_labels.len() + self.target.labels.len() + 1,
        );
        let pairs = self
            .target
            .defaults
            .iter()
            .chain(attrs.iter())
            .chain(self.scope_labels.iter())
            .chain(if self.scraped {
                self.target.scraped_labels.iter()
            } else {
                self.target.labels.iter()
            })
            .map(|(k, v)| (k.as_str(), v.as_str()));
        v.extend(pairs);
        v.extend(extra);
        v.retain(|(_, val)| !val.is_empty());
        v.sort_by(|a, b| a.0.cmp(b.0)); // stable: later sources stay later
        let mut out: Vec<(&str, &str)> = Vec::with_capacity(v.len());
        for p in v {
            match out.last_mut() {
                Some(last) if last.0 == p.0 => *last = p,
                _ => out.push(p),
            }
        }
        out
    }
}

/// Sanitises attribute keys with `f`, stringifies values, drops empty values
/// and joins the values of keys that collide after sanitising with `;`, in
/// the order of the original keys.
fn sanitized(attrs: &[KeyValue], f: fn(&str) -> Option<String>) -> Labels {
    let mut v: Vec<(&str, String, String)> = attrs
        .iter()
        .filter_map(|kv| {
            let val = any_value_string(kv.value.as_ref());
            if val.is_empty() {
                return None;
            }
            f(&kv.key).map(|k| (kv.key.as_str(), k, val))
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    join_collisions(v.into_iter().map(|(_, k, val)| (k, val)).collect())
}

/// Joins values of equal keys with `;` (input order), result sorted by key.
fn join_collisions(v: Labels) -> Labels {
    let mut out: Labels = Vec::with_capacity(v.len());
    for (k, val) in v {
        match out.iter_mut().find(|(ok, _)| *ok == k) {
            Some((_, ov)) => {
                ov.push(';');
                ov.push_str(&val);
            }
            None => out.push((k, val)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The identity of a series for the delta state: name and label pairs,
/// separated by bytes that cannot occur in sanitised names (`\xff` is not
/// valid UTF-8, so a `\u{1}` / `\u{0}` pair is used).
fn series_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut k = String::with_capacity(
        name.len()
            + labels
                .iter()
                .map(|(a, b)| a.len() + b.len() + 2)
                .sum::<usize>(),
    );
    k.push_str(name);
    for (a, b) in labels {
        k.push('\u{0}');
        k.push_str(a);
        k.push('\u{1}');
        k.push_str(b);
    }
    k
}

fn attr(attrs: &[KeyValue], key: &str) -> String {
    attrs
        .iter()
        .rev() // the last occurrence of a duplicated key wins
        .find(|kv| kv.key == key)
        .map(|kv| any_value_string(kv.value.as_ref()))
        .unwrap_or_default()
}

fn target_of(res: &[KeyValue]) -> Target {
    let name = attr(res, "service.name");
    let ns = attr(res, "service.namespace");
    let job = if !ns.is_empty() && !name.is_empty() {
        format!("{ns}/{name}")
    } else {
        name
    };
    let build = |job: String| -> Labels {
        [
            ("job", job),
            ("instance", attr(res, "service.instance.id")),
            ("cluster", attr(res, "k8s.cluster.name")),
            ("node", attr(res, "k8s.node.name")),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    };
    let defaults = [
        ("model", attr(res, "model.name")),
        ("model_version", attr(res, "model.version")),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Target {
        labels: build(job),
        scraped_labels: build(attr(res, "service.name")),
        defaults,
    }
}

/// `target_info{job, instance, cluster, node, <other resource attributes>} 1`,
/// only when the resource has attributes beyond the promoted ones.
fn write_target_info(store: &Store, res: &[KeyValue], target: &Target, now_ms: i64) {
    let rest: Vec<KeyValue> = res
        .iter()
        .filter(|kv| !PROMOTED.contains(&kv.key.as_str()))
        .cloned()
        .collect();
    let mut labels = sanitized(&rest, names::label_name);
    if labels.is_empty() {
        return;
    }
    labels.retain(|(k, _)| !target.labels.iter().any(|(t, _)| t == k));
    labels.extend(target.labels.iter().cloned());
    let refs: Vec<(&str, &str)> = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let fam = store.family("target_info", MetricType::Gauge, "Target metadata", "");
    store.write(fam, "target_info", &refs, 1.0, now_ms, now_ms);
}

#[cfg(test)]
mod tests;
