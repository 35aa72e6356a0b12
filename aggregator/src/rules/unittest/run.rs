//! One test group, run as promtool runs it (`cmd/promtool/unittest.go`):
//! from time 0 to the latest `eval_time`, every `evaluation_interval`, the
//! input samples up to that instant go into a fresh store and every rule
//! group is evaluated by the aggregator's own [`RuleEngine`] (so `for:`,
//! `keep_firing_for`, `ALERTS` and recorded series chain as in service);
//! an alert test at `eval_time` sees the state of the last evaluation at or
//! before it; a PromQL test is the aggregator's instant query at `eval_time`
//! over the samples and recorded series up to then.
//!
//! The store is filled as time goes on rather than up front: rule evaluation
//! at `t` reads exactly what Prometheus' would (samples up to `t`), and so
//! does a PromQL test, except that a negative `offset` in one cannot look
//! past its `eval_time` (promtool's can, up to the last `eval_time`).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use prometheus::Registry;

use super::report::{self, AlertView, SampleView};
use super::series;
use super::spec::{AlertTest, PromqlTest, TestGroup};
use super::Source;
use crate::promql::{self, Labels, Value};
use crate::rules::alerting::AlertState;
use crate::rules::file::RuleSpec;
use crate::rules::template::Externals;
use crate::rules::{load_group, lock, GroupDef, Inner, Metrics, RuleEngine, RulesError};
use crate::store::{FamilyId, MetricType, Store, StoreOptions, WindowOptions, WindowScope};

/// A rule group of the files under test, in evaluation order.
#[derive(Debug, Clone)]
pub struct RuleGroup {
    pub name: String,
    pub file: String,
    pub rules: Vec<RuleSpec>,
}

/// One input series, its samples as `(ms, value)` in time order.
struct Input {
    name: String,
    family: FamilyId,
    labels: Vec<(String, String)>,
    samples: Vec<(i64, f64)>,
    /// Samples before this index are in the store.
    fed: usize,
}

/// Runs test group `tg` over `groups`; returns its failures in promtool's
/// wording (empty when it passes).
pub fn run_test_group(
    tg: &TestGroup,
    groups: &[RuleGroup],
    eval_ms: i64,
    src: &Source<'_>,
) -> Vec<String> {
    match Run::new(tg, groups, eval_ms, src) {
        Ok(run) => run.run(),
        Err(e) => vec![e],
    }
}

struct Run<'a> {
    tg: &'a TestGroup,
    eval_ms: i64,
    store: Arc<Store>,
    engine: RuleEngine,
    inputs: Vec<Input>,
}

impl<'a> Run<'a> {
    fn new(
        tg: &'a TestGroup,
        groups: &[RuleGroup],
        eval_ms: i64,
        src: &Source<'_>,
    ) -> Result<Self, String> {
        if let Some(t) = tg.alert_rule_test.iter().find(|t| t.alertname.0.is_empty()) {
            let in_group = match tg.name.as_ref().map(|n| n.as_str()) {
                Some(n) if !n.is_empty() => format!(" (in TestGroup {n})"),
                _ => String::new(),
            };
            return Err(format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{in_group}",
                report::model_duration(t.eval_time.get().as_millis() as i64)
            ));
        }
        let step_ms = tg
            .interval
            .map(|d| d.get().as_millis() as i64)
            .unwrap_or(eval_ms);
        let registry = Registry::new();
        let store = Arc::new(Store::new(
            StoreOptions {
                // Nothing goes stale by arrival time: the lookback decides, as in Prometheus.
                staleness: Duration::from_secs(100 * 365 * 86_400),
            },
            &registry,
        ));
        let max_ms = max_eval_ms(tg);
        store.set_window(WindowOptions {
            window: Duration::from_millis(max_ms.max(0) as u64 + 1),
            max_samples: usize::MAX,
            scope: WindowScope::All,
        });
        let inputs = inputs(tg, step_ms, &store, src)?;
        let engine = offline_engine(groups, store.clone(), &registry, eval_ms, externals(tg))
            .map_err(|e| format!("loading rules: {e}"))?;
        Ok(Self {
            tg,
            eval_ms,
            store,
            engine,
            inputs,
        })
    }

    fn run(mut self) -> Vec<String> {
        let max_ms = max_eval_ms(self.tg);
        let mut alert_tests: Vec<&AlertTest> = self.tg.alert_rule_test.iter().collect();
        alert_tests.sort_by_key(|t| t.eval_time);
        let mut promql_tests: Vec<(usize, &PromqlTest)> =
            self.tg.promql_expr_test.iter().enumerate().collect();
        promql_tests.sort_by_key(|(_, t)| t.eval_time);
        let mut promql_results: Vec<Option<String>> = vec![None; promql_tests.len()];
        let mut errs = Vec::new();
        let (mut next_alert, mut next_promql) = (0, 0);
        let mut ts = 0;
        while ts <= max_ms {
            self.feed(ts);
            self.engine.evaluate_all(ts);
            let eval_errs = self.rule_errors(ts);
            if !eval_errs.is_empty() {
                errs.extend(eval_errs);
                return errs;
            }
            let step = self.eval_ms;
            let due = |ms: i64| ms >= ts && ms < ts.saturating_add(step);
            while let Some(t) = alert_tests
                .get(next_alert)
                .filter(|t| due(ms_of(t.eval_time)))
            {
                errs.extend(self.check_alerts(t));
                next_alert += 1;
            }
            while let Some((i, t)) = promql_tests
                .get(next_promql)
                .filter(|(_, t)| due(ms_of(t.eval_time)))
            {
                self.feed(ms_of(t.eval_time));
                promql_results[*i] = self.check_promql(t);
                next_promql += 1;
            }
            match ts.checked_add(self.eval_ms) {
                Some(next) => ts = next,
                None => break,
            }
        }
        errs.extend(promql_results.into_iter().flatten());
        errs
    }

    /// Writes every input sample up to `t_ms` (arriving at its own time).
    fn feed(&mut self, t_ms: i64) {
        for input in &mut self.inputs {
            let pairs: Vec<(&str, &str)> = input
                .labels
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            while let Some(&(ts, v)) = input.samples.get(input.fed).filter(|s| s.0 <= t_ms) {
                self.store
                    .write(input.family, &input.name, &pairs, v, ts, ts);
                input.fed += 1;
            }
        }
    }

    /// The rules whose last evaluation failed (at `ts`).
    fn rule_errors(&self, ts: i64) -> Vec<String> {
        let mut out = Vec::new();
        for g in self.engine.groups().iter() {
            for r in &g.rules {
                let rt = lock(&r.state);
                if rt.health.health == "err" {
                    out.push(report::rule_error(r.spec.name(), ts, &rt.health.last_error));
                }
            }
        }
        out
    }

    /// The firing alerts of every alerting rule named `alertname` against the
    /// expected ones.
    fn check_alerts(&self, t: &AlertTest) -> Option<String> {
        let alertname = t.alertname.as_str();
        let mut got = Vec::new();
        for g in self.engine.groups().iter() {
            for r in g
                .rules
                .iter()
                .filter(|r| r.alert.is_some() && r.spec.name() == alertname)
            {
                let rt = lock(&r.state);
                got.extend(
                    rt.alerts
                        .active
                        .values()
                        .filter(|a| a.state == AlertState::Firing)
                        .map(|a| AlertView::new(&a.labels, &a.annotations)),
                );
            }
        }
        let mut exp: Vec<AlertView> = t
            .exp_alerts
            .iter()
            .map(|a| {
                let mut labels = strings(&a.exp_labels);
                labels.insert("alertname".to_string(), alertname.to_string());
                AlertView::new(&labels, &strings(&a.exp_annotations))
            })
            .collect();
        got.sort();
        exp.sort();
        (got != exp).then(|| {
            let name = self.tg.name.as_ref().map(|n| n.as_str());
            report::alert_failure(name, alertname, ms_of(t.eval_time), &exp, &got)
        })
    }

    /// A PromQL test: the instant query at its `eval_time` against the expected samples.
    fn check_promql(&self, t: &PromqlTest) -> Option<String> {
        let (expr, at) = (t.expr.as_str(), ms_of(t.eval_time));
        let got = match promql::instant_query(&self.store, expr, at) {
            Ok(Value::Vector(v)) => v
                .into_iter()
                .map(|s| sample_view(s.labels, s.value))
                .collect(),
            Ok(Value::Scalar(v)) => vec![sample_view(Labels::new(), v)],
            Ok(_) => {
                return Some(report::promql_error(
                    expr,
                    at,
                    "rule result is not a vector or scalar",
                ))
            }
            Err(e) => return Some(report::promql_error(expr, at, &e.to_string())),
        };
        let mut exp = Vec::new();
        for s in &t.exp_samples {
            match series::parse_labels(s.labels.as_str()) {
                Ok(l) => exp.push(sample_view(l, s.value)),
                Err(e) => {
                    let err = format!("labels {}: {e}", report::go_quote(s.labels.as_str()));
                    return Some(report::promql_error(expr, at, &err));
                }
            }
        }
        let mut got: Vec<SampleView> = got;
        got.sort_by(|a, b| a.labels.cmp(&b.labels));
        exp.sort_by(|a, b| a.labels.cmp(&b.labels));
        // Exact comparison, as promtool's `reflect.DeepEqual` (NaN never equals).
        let same = got.len() == exp.len()
            && got
                .iter()
                .zip(&exp)
                .all(|(g, e)| g.labels == e.labels && g.value == e.value);
        (!same).then(|| report::promql_failure(expr, at, &exp, &got))
    }
}

fn ms_of(d: edgewatch_config::Dur) -> i64 {
    d.get().as_millis().min(i64::MAX as u128) as i64
}

fn max_eval_ms(tg: &TestGroup) -> i64 {
    let alerts = tg.alert_rule_test.iter().map(|t| ms_of(t.eval_time));
    let exprs = tg.promql_expr_test.iter().map(|t| ms_of(t.eval_time));
    alerts.chain(exprs).max().unwrap_or(0)
}

/// The test group's `external_labels` and `external_url`, for templates.
fn externals(tg: &TestGroup) -> Externals {
    Externals {
        labels: strings(&tg.external_labels),
        url: tg
            .external_url
            .as_ref()
            .map(|u| u.0.clone())
            .unwrap_or_default(),
    }
}

fn strings(m: &BTreeMap<String, super::spec::Scalar>) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}

fn sample_view(labels: Labels, value: f64) -> SampleView {
    SampleView {
        labels: labels.into_iter().filter(|(_, v)| !v.is_empty()).collect(),
        value,
    }
}

/// The input series of `tg`, expanded, with their families registered.
fn inputs(
    tg: &TestGroup,
    step_ms: i64,
    store: &Store,
    src: &Source<'_>,
) -> Result<Vec<Input>, String> {
    let mut out = Vec::new();
    for s in &tg.input_series {
        let (series, values) = (s.series.as_str(), s.values.as_str());
        let mut labels = series::parse_labels(series).map_err(|e| src.error_at(series, e))?;
        let name = labels.remove("__name__").ok_or_else(|| {
            src.error_at(
                series,
                format!("input series {series:?} has no metric name"),
            )
        })?;
        let values = series::expand_values(values).map_err(|e| src.error_at(values, e))?;
        let samples = values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| ((i as i64).saturating_mul(step_ms), v)))
            .collect();
        out.push(Input {
            family: store.family(&name, MetricType::Unknown, "", ""),
            name,
            labels: labels.into_iter().collect(),
            samples,
            fed: 0,
        });
    }
    Ok(out)
}

/// A rule engine over `groups` alone: no built-in groups, no fleet liveness,
/// alert state in a temporary database (a test starts from nothing).
fn offline_engine(
    groups: &[RuleGroup],
    store: Arc<Store>,
    registry: &Registry,
    eval_ms: i64,
    externals: Externals,
) -> Result<RuleEngine, RulesError> {
    let state = sled::Config::new().temporary(true).open()?;
    let tree = state.open_tree("rules")?;
    let eval_interval = Duration::from_millis(eval_ms as u64);
    let (mut window, mut held) = (Vec::new(), 0);
    let groups = groups
        .iter()
        .map(|g| {
            let def = GroupDef {
                name: g.name.clone(),
                file: g.file.clone(),
                interval: eval_interval,
                rules: g.rules.clone(),
            };
            let mut group = load_group(def, Some((&tree, &mut held)), &mut window)?;
            for alert in group.rules.iter_mut().filter_map(|r| r.alert.as_mut()) {
                alert.external_url.clone_from(&externals.url);
                alert.external_labels.clone_from(&externals.labels);
            }
            Ok::<_, sled::Error>(group)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RuleEngine {
        inner: Arc::new(Inner {
            store,
            tree,
            groups: RwLock::new(groups.into()),
            generation: tokio::sync::watch::Sender::new(0),
            metrics: Metrics::new(registry)?,
            restore_grace: Duration::ZERO,
            hold_until: OnceLock::new(),
            liveness: None,
        }),
    })
}
