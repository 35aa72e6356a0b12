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
mod labels;
pub mod names;
mod target;

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use edgewatch_otlp::view::{
    Data, HistogramPoint, MetricView, NumberPoint, NumberValue, RequestView, SummaryPoint,
};
use opentelemetry_proto::tonic::metrics::v1::AggregationTemporality;

use crate::store::{FamilyId, Logged, MetricType, Store, WriteOutcome, STALE_NAN};
use delta::{DeltaState, HistTotals, SeriesKey};
use edgewatch_prom::float::write_text_float;
use labels::{at, push, recycle, set, with, AttrLabels, Few, LeCache};
use names::NameKind;
use target::{write_target_info, Target};

/// The InstrumentationScope name the collector's Prometheus scrape receiver
/// sets on metrics it scraped.
pub const SCRAPE_SCOPE: &str = "edgewatch.scrape";

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the OTLP stale marker, written to the
/// store as Prometheus' stale NaN so the series stops being served at once.
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// Metric names kept before the cache is emptied (it holds one entry per
/// metric name, unit and kind seen; a leak of names must not grow it forever).
const NAME_CACHE_MAX: usize = 100_000;

/// Scratch buffers kept for reuse (one per concurrent ingest).
const SCRATCH_POOL_MAX: usize = 16;

/// What one request produced. Points with the `NO_RECORDED_VALUE` flag are
/// counted as accepted (they are valid; they just carry no sample).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestOutcome {
    pub accepted_points: u64,
    pub dropped_points: u64,
    /// Points not stored because of the aggregator's limits (`limits:`): a point
    /// counts once when any of the samples it makes was refused.
    pub limited_points: u64,
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

/// The authenticated sender of a request (see `ingest::identity`): its cluster
/// replaces every resource's `k8s.cluster.name` (label `cluster`), whatever the
/// sender wrote. Costs one comparison per resource when the claim matches.
pub trait Authority {
    fn cluster(&self) -> &str;
    /// A resource claimed `claimed` (not empty, not [`Authority::cluster`]).
    fn overridden(&self, claimed: &str);
}

/// Converts OTLP requests into store writes. Holds the delta→cumulative
/// state; `Send + Sync`.
pub struct Converter {
    delta: DeltaState,
    names: RwLock<NameCache>,
    scratch: Mutex<Vec<Scratch>>,
    points: prometheus::IntCounter,
    dropped: prometheus::IntCounterVec,
    out_of_order: prometheus::IntCounter,
}

/// The Prometheus names of an OTLP metric, worked out once per metric name,
/// unit and kind rather than per request.
struct MetricNames {
    otlp_name: Box<str>,
    otlp_unit: Box<str>,
    kind: NameKind,
    scraped: bool,
    /// `None` when nothing valid is left of the name.
    name: Option<String>,
    unit: String,
    bucket: String,
    sum: String,
    count: String,
}

impl MetricNames {
    fn new(otlp_name: &str, otlp_unit: &str, kind: NameKind, scraped: bool) -> Self {
        let (name, unit) = if scraped {
            (names::scraped_metric_name(otlp_name), String::new())
        } else {
            let (main, per) = names::unit_words(otlp_unit);
            let unit = match (main.is_empty(), per.is_empty()) {
                (false, false) => format!("{main}_per_{per}"),
                (false, true) => main,
                (true, false) => format!("per_{per}"),
                (true, true) => String::new(),
            };
            (names::metric_name(otlp_name, otlp_unit, kind), unit)
        };
        let suffixed = |s: &str| {
            name.as_deref()
                .map(|n| format!("{n}{s}"))
                .unwrap_or_default()
        };
        MetricNames {
            otlp_name: otlp_name.into(),
            otlp_unit: otlp_unit.into(),
            kind,
            scraped,
            bucket: suffixed("_bucket"),
            sum: suffixed("_sum"),
            count: suffixed("_count"),
            name,
            unit,
        }
    }

    fn is(&self, name: &str, unit: &str, kind: NameKind, scraped: bool) -> bool {
        &*self.otlp_name == name
            && &*self.otlp_unit == unit
            && self.kind == kind
            && self.scraped == scraped
    }
}

/// [`MetricNames`] by a hash of what they are made from: looked up without
/// building a key.
#[derive(Default)]
struct NameCache {
    by_hash: HashMap<u64, Vec<Arc<MetricNames>>>,
    len: usize,
}

impl NameCache {
    fn get(
        &self,
        h: u64,
        name: &str,
        unit: &str,
        kind: NameKind,
        scraped: bool,
    ) -> Option<Arc<MetricNames>> {
        self.by_hash
            .get(&h)?
            .iter()
            .find(|n| n.is(name, unit, kind, scraped))
            .cloned()
    }
}

/// Buffers reused from request to request.
#[derive(Default)]
struct Scratch {
    /// Target label values of the current resource.
    resource: Vec<u8>,
    point: PointScratch,
}

/// Buffers reused from point to point.
#[derive(Default)]
struct PointScratch {
    attrs: AttrLabels,
    /// Kept empty between points: the allocation of a point's label set,
    /// which borrows `attrs` and the request while in use (see `recycle`).
    base: Vec<(&'static str, &'static str)>,
    /// The same for `base` plus `le` or `quantile`.
    extra: Vec<(&'static str, &'static str)>,
    /// A `quantile` value.
    text: Vec<u8>,
    bounds: Vec<f64>,
    counts: Vec<u64>,
    hist: HistTotals,
    les: LeCache,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per-request counters.
#[derive(Default)]
struct Tally {
    accepted: u64,
    limited: u64,
    dropped: Vec<(DropReason, u64)>,
}

impl Tally {
    /// A point is accepted unless a limit refused one of its samples since
    /// `before` (the context's count of refused samples).
    fn settle(&mut self, ctx: &Ctx<'_>, before: u64) {
        if ctx.limited.get() > before {
            self.limited += 1;
        } else {
            self.accepted += 1;
        }
    }

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
            names: RwLock::new(NameCache::default()),
            scratch: Mutex::new(Vec::new()),
            points,
            dropped,
            out_of_order,
        }
    }

    /// Number of series with delta→cumulative state held.
    pub fn delta_series(&self) -> usize {
        self.delta.len()
    }

    /// Converts one request into store writes (not logged).
    pub fn ingest(&self, req: RequestView<'_>, store: &Store, now_ms: i64) -> IngestOutcome {
        self.ingest_into(req, &store.unlogged(now_ms))
    }

    /// Converts one request into writes through `out` (into the store, and into
    /// the log's record when `out` is logged).
    pub fn ingest_into(&self, req: RequestView<'_>, out: &Logged<'_>) -> IngestOutcome {
        self.ingest_as(req, out, None)
    }

    /// Like [`Converter::ingest_into`], for a request whose sender the core
    /// authenticated: `authority`'s cluster is every series' `cluster`.
    pub fn ingest_as(
        &self,
        req: RequestView<'_>,
        out: &Logged<'_>,
        authority: Option<&dyn Authority>,
    ) -> IngestOutcome {
        let store = out.store();
        let now_ms = out.now_ms();
        self.delta.maybe_expire(now_ms);
        let mut scratch = lock(&self.scratch).pop().unwrap_or_default();
        let Scratch { resource, point } = &mut scratch;
        let mut t = Tally::default();
        for rm in req.resource_metrics() {
            let target = Target::of(rm, resource, authority);
            let mut native = false;
            for sm in rm.scope_metrics() {
                let scope_name = sm.scope_name();
                let scraped = scope_name == SCRAPE_SCOPE;
                let scope_labels: Few<'_, 2> = if scraped {
                    Few::non_empty([])
                } else {
                    native |= sm.metrics().next().is_some();
                    Few::non_empty([
                        ("otel_scope_name", scope_name),
                        ("otel_scope_version", sm.scope_version()),
                    ])
                };
                let ctx = Ctx {
                    store,
                    out,
                    out_of_order: Cell::new(0),
                    limited: Cell::new(0),
                    now_ms,
                    scraped,
                    scope_labels: scope_labels.as_slice(),
                    target: &target,
                };
                for m in sm.metrics() {
                    self.metric(&ctx, m, &mut t, point);
                }
                self.out_of_order.inc_by(ctx.out_of_order.get());
            }
            if native {
                write_target_info(out, rm, &target, point);
            }
        }
        let mut pool = lock(&self.scratch);
        if pool.len() < SCRATCH_POOL_MAX {
            pool.push(scratch);
        }
        drop(pool);
        self.points.inc_by(t.accepted);
        let mut dropped = 0;
        for (r, n) in &t.dropped {
            self.dropped.with_label_values(&[r.as_str()]).inc_by(*n);
            dropped += n;
        }
        IngestOutcome {
            accepted_points: t.accepted,
            dropped_points: dropped,
            limited_points: t.limited,
        }
    }

    fn names(&self, name: &str, unit: &str, kind: NameKind, scraped: bool) -> Arc<MetricNames> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (name, unit, kind, scraped).hash(&mut h);
        let h = h.finish();
        let cache = &self.names;
        if let Some(n) = cache
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(h, name, unit, kind, scraped)
        {
            return n;
        }
        let mut c = cache.write().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = c.get(h, name, unit, kind, scraped) {
            return n;
        }
        if c.len >= NAME_CACHE_MAX {
            *c = NameCache::default();
        }
        let n = Arc::new(MetricNames::new(name, unit, kind, scraped));
        c.by_hash.entry(h).or_default().push(n.clone());
        c.len += 1;
        n
    }

    fn metric(&self, ctx: &Ctx<'_>, m: MetricView<'_>, t: &mut Tally, s: &mut PointScratch) {
        let Some(data) = m.data() else { return };
        let npoints = data.view().point_count() as u64;
        if m.name().is_empty() {
            t.drop(DropReason::EmptyName, npoints);
            return;
        }
        // (type, naming kind, delta?)
        let (mtype, kind, delta) = match data {
            Data::Gauge(_) => (MetricType::Gauge, NameKind::Gauge, false),
            Data::Sum(s) => {
                let delta = match temporality(s.aggregation_temporality()) {
                    Some(d) => d,
                    None => return t.drop(DropReason::UnspecifiedTemporality, npoints),
                };
                if s.is_monotonic() {
                    (MetricType::Counter, NameKind::Counter, delta)
                } else {
                    (MetricType::Gauge, NameKind::Other, delta)
                }
            }
            Data::Histogram(h) => match temporality(h.aggregation_temporality()) {
                Some(d) => (MetricType::Histogram, NameKind::Other, d),
                None => return t.drop(DropReason::UnspecifiedTemporality, npoints),
            },
            Data::Summary(_) => (MetricType::Summary, NameKind::Other, false),
            Data::ExponentialHistogram(_) => {
                return t.drop(DropReason::ExponentialHistogram, npoints);
            }
        };
        let names = self.names(m.name(), m.unit(), kind, ctx.scraped);
        let Some(name) = names.name.as_deref() else {
            return t.drop(DropReason::InvalidName, npoints);
        };
        // Before its family is registered: an oversized help is never kept.
        if ctx
            .out
            .refuses_metric(ctx.target.cluster(), name, m.description(), npoints)
        {
            t.limited += npoints;
            return;
        }
        let fam = ctx.store.family(name, mtype, m.description(), &names.unit);
        match data {
            Data::Gauge(d) | Data::Sum(d) => {
                for p in d.number_points() {
                    self.number(ctx, fam, name, p, delta, t, s);
                }
            }
            Data::Histogram(h) => {
                for p in h.histogram_points() {
                    self.histogram(ctx, fam, &names, p, delta, t, s);
                }
            }
            Data::Summary(d) => {
                for p in d.summary_points() {
                    summary(ctx, fam, &names, p, t, s);
                }
            }
            Data::ExponentialHistogram(_) => {}
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn number(
        &self,
        ctx: &Ctx<'_>,
        fam: FamilyId,
        name: &str,
        p: NumberPoint<'_>,
        delta: bool,
        t: &mut Tally,
        s: &mut PointScratch,
    ) {
        let marker = p.flags & FLAG_NO_RECORDED_VALUE != 0;
        let v = match p.value {
            _ if marker => STALE_NAN,
            Some(NumberValue::Double(d)) => d,
            Some(NumberValue::Int(i)) => i as f64,
            None => return t.drop(DropReason::MissingValue, 1),
        };
        s.attrs.build(p.attributes, ctx.scraped);
        let mut base = recycle(std::mem::take(&mut s.base));
        ctx.merge(&s.attrs, &mut base);
        let ts = ctx.ts(p.time_unix_nano);
        let v = if delta && !marker {
            let key = SeriesKey {
                name,
                labels: &base,
            };
            self.delta
                .add_sum(&key, v, ctx.time_ns(p.time_unix_nano), ctx.now_ms)
        } else {
            Some(v)
        };
        match v {
            Some(v) => {
                let before = ctx.limited.get();
                ctx.write(fam, name, &base, v, ts);
                t.settle(ctx, before);
            }
            None => t.drop(DropReason::DeltaOutOfOrder, 1),
        }
        s.base = recycle(base);
    }

    #[allow(clippy::too_many_arguments)]
    fn histogram(
        &self,
        ctx: &Ctx<'_>,
        fam: FamilyId,
        n: &MetricNames,
        p: HistogramPoint<'_>,
        delta: bool,
        t: &mut Tally,
        s: &mut PointScratch,
    ) {
        let PointScratch {
            attrs,
            base: base_buf,
            extra,
            bounds,
            counts,
            hist,
            les,
            ..
        } = s;
        let name = n.name.as_deref().unwrap_or_default();
        bounds.clear();
        bounds.extend(p.explicit_bounds.map(f64::from_bits));
        let marker = p.flags & FLAG_NO_RECORDED_VALUE != 0;
        if !marker {
            counts.clear();
            counts.extend(p.bucket_counts);
            let valid = (counts.is_empty() || counts.len() == bounds.len() + 1)
                && bounds.iter().all(|b| !b.is_nan())
                && bounds.windows(2).all(|w| w[0] < w[1]);
            if !valid {
                return t.drop(DropReason::InvalidHistogram, 1);
            }
        }
        attrs.build(p.attributes, ctx.scraped);
        let mut base = recycle(std::mem::take(base_buf));
        ctx.merge(attrs, &mut base);
        let ts = ctx.ts(p.time_unix_nano);
        let mut lab = recycle(std::mem::take(extra));
        let before = ctx.limited.get();
        if marker {
            // A stale marker names its bounds, so every bucket series can be ended.
            for (b, le) in bounds.iter().zip(les.les(bounds)) {
                if b.is_finite() {
                    with(&mut lab, &base, "le", le);
                    ctx.write(fam, &n.bucket, &lab, STALE_NAN, ts);
                }
            }
            with(&mut lab, &base, "le", "+Inf");
            ctx.write(fam, &n.bucket, &lab, STALE_NAN, ts);
            ctx.sum_count(fam, n, &base, Some(STALE_NAN), STALE_NAN, ts);
            t.settle(ctx, before);
        } else {
            let totals = if delta {
                hist.counts.clear();
                hist.counts.extend_from_slice(counts);
                hist.sum = p.sum.unwrap_or(0.0);
                hist.count = p.count;
                let key = SeriesKey {
                    name,
                    labels: &base,
                };
                self.delta
                    .add_hist(
                        &key,
                        bounds,
                        hist,
                        ctx.time_ns(p.time_unix_nano),
                        ctx.now_ms,
                    )
                    .then_some((&hist.counts[..], p.sum.map(|_| hist.sum), hist.count))
            } else {
                Some((&counts[..], p.sum, p.count))
            };
            match totals {
                Some((counts, sum, count)) => {
                    let mut cum: u64 = 0;
                    if !counts.is_empty() {
                        for ((b, c), le) in bounds.iter().zip(counts).zip(les.les(bounds)) {
                            cum = cum.saturating_add(*c);
                            if *b == f64::INFINITY {
                                continue; // the +Inf bucket is written below from the count
                            }
                            with(&mut lab, &base, "le", le);
                            ctx.write(fam, &n.bucket, &lab, cum as f64, ts);
                        }
                    }
                    with(&mut lab, &base, "le", "+Inf");
                    ctx.write(fam, &n.bucket, &lab, count as f64, ts);
                    ctx.sum_count(fam, n, &base, sum, count as f64, ts);
                    t.settle(ctx, before);
                }
                None => t.drop(DropReason::DeltaOutOfOrder, 1),
            }
        }
        *extra = recycle(lab);
        *base_buf = recycle(base);
    }
}

fn summary(
    ctx: &Ctx<'_>,
    fam: FamilyId,
    n: &MetricNames,
    p: SummaryPoint<'_>,
    t: &mut Tally,
    s: &mut PointScratch,
) {
    let name = n.name.as_deref().unwrap_or_default();
    let marker = p.flags & FLAG_NO_RECORDED_VALUE != 0;
    s.attrs.build(p.attributes, ctx.scraped);
    let mut base = recycle(std::mem::take(&mut s.base));
    ctx.merge(&s.attrs, &mut base);
    let ts = ctx.ts(p.time_unix_nano);
    let before = ctx.limited.get();
    // Without the marker's quantiles their series go stale with the store's
    // staleness period instead.
    for q in p.quantile_values {
        s.text.clear();
        let qs = push(&mut s.text, |t| write_text_float(t, q.quantile));
        let mut lab = recycle(std::mem::take(&mut s.extra));
        with(&mut lab, &base, "quantile", at(&s.text, qs));
        ctx.write(
            fam,
            name,
            &lab,
            if marker { STALE_NAN } else { q.value },
            ts,
        );
        s.extra = recycle(lab);
    }
    if marker {
        ctx.sum_count(fam, n, &base, Some(STALE_NAN), STALE_NAN, ts);
    } else {
        ctx.sum_count(fam, n, &base, Some(p.sum), p.count as f64, ts);
    }
    t.settle(ctx, before);
    s.base = recycle(base);
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
    out: &'a Logged<'a>,
    /// Samples the store ignored as older than the one it holds.
    out_of_order: Cell<u64>,
    /// Samples the store refused over a limit.
    limited: Cell<u64>,
    now_ms: i64,
    scraped: bool,
    scope_labels: &'a [(&'a str, &'a str)],
    target: &'a Target<'a>,
}

impl Ctx<'_> {
    /// Writes `_sum` (when there is one) and `_count`.
    fn sum_count(
        &self,
        fam: FamilyId,
        n: &MetricNames,
        base: &[(&str, &str)],
        sum: Option<f64>,
        count: f64,
        ts: i64,
    ) {
        if let Some(sum) = sum {
            self.write(fam, &n.sum, base, sum, ts);
        }
        self.write(fam, &n.count, base, count, ts);
    }

    /// Writes a sample; a stale marker ends the series.
    fn write(&self, fam: FamilyId, name: &str, labels: &[(&str, &str)], value: f64, ts: i64) {
        match self.out.write(fam, name, labels, value, ts) {
            WriteOutcome::OutOfOrder => self.out_of_order.set(self.out_of_order.get() + 1),
            WriteOutcome::Limited(_) => self.limited.set(self.limited.get() + 1),
            _ => {}
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

    /// Final label set into `out` (sorted by name, unique names, no empty
    /// values): model defaults < attributes < scope labels < target labels.
    fn merge<'x>(&'x self, attrs: &'x AttrLabels, out: &mut Vec<(&'x str, &'x str)>) {
        out.extend(attrs.pairs());
        for &(k, v) in self.target.defaults.as_slice() {
            set(out, k, v, false);
        }
        let target = if self.scraped {
            &self.target.scraped_labels
        } else {
            &self.target.labels
        };
        for &(k, v) in self.scope_labels.iter().chain(target.as_slice()) {
            set(out, k, v, true);
        }
    }
}

#[cfg(test)]
mod tests;
