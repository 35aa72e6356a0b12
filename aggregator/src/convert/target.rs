//! The resource of a request: the labels it gives every series (`job`,
//! `instance`, `cluster`, `node`, model defaults) and `target_info`.

use edgewatch_otlp::view::ResourceMetricsView;

use super::attrs::write_any_value;
use super::labels::{at, push, recycle, Few};
use super::{Authority, PointScratch};
use crate::store::{Logged, MetricType};

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

/// Per-resource context: label pairs sorted by name, values non-empty.
pub(super) struct Target<'r> {
    /// cluster, instance, job, node.
    pub labels: Few<'r, 4>,
    /// The same for scraped-origin series: job is `service.name` alone (the
    /// scrape job name the receiver put there).
    pub scraped_labels: Few<'r, 4>,
    /// `model`, `model_version` from the collector's model enrichment: added only
    /// where the series has no label of that name (Triton's own `model` wins).
    pub defaults: Few<'r, 2>,
}

impl<'r> Target<'r> {
    /// The `cluster` label every series of this resource gets (empty: none).
    pub fn cluster(&self) -> &str {
        crate::store::limits::cluster_of(self.labels.as_slice())
    }

    /// The promoted attributes of a resource (of a duplicated key the last
    /// occurrence wins), their values written to `arena`.
    /// With an `authority`, its cluster replaces the resource's.
    pub(super) fn of(
        rm: ResourceMetricsView<'_>,
        arena: &'r mut Vec<u8>,
        authority: Option<&dyn Authority>,
    ) -> Self {
        arena.clear();
        let mut found = [None; PROMOTED.len()];
        for kv in rm.resource_attributes() {
            let key = kv.key();
            if let Some(i) = PROMOTED.iter().position(|p| *p == key) {
                found[i] = Some(kv);
            }
        }
        let spans =
            found.map(|kv| push(arena, |a| write_any_value(a, kv.and_then(|kv| kv.value()))));
        let [name, ns, instance, mut cluster, node, model, version] = spans;
        if let Some(a) = authority {
            let claimed = at(arena, cluster);
            if claimed != a.cluster() {
                if !claimed.is_empty() {
                    a.overridden(claimed);
                }
                cluster = push(arena, |ar| ar.extend_from_slice(a.cluster().as_bytes()));
            }
        }
        let job = if ns.is_empty() || name.is_empty() {
            name
        } else {
            push(arena, |a| {
                a.extend_from_within(ns.range());
                a.push(b'/');
                a.extend_from_within(name.range());
            })
        };
        let arena: &'r [u8] = arena;
        let pairs = |job| {
            Few::non_empty([
                ("cluster", at(arena, cluster)),
                ("instance", at(arena, instance)),
                ("job", at(arena, job)),
                ("node", at(arena, node)),
            ])
        };
        Target {
            labels: pairs(job),
            scraped_labels: pairs(name),
            defaults: Few::non_empty([
                ("model", at(arena, model)),
                ("model_version", at(arena, version)),
            ]),
        }
    }
}

/// `target_info{job, instance, cluster, node, <other resource attributes>} 1`,
/// only when the resource has attributes beyond the promoted ones.
pub(super) fn write_target_info(
    out: &Logged<'_>,
    rm: ResourceMetricsView<'_>,
    target: &Target<'_>,
    s: &mut PointScratch,
) {
    let rest = rm
        .resource_attributes()
        .filter(|kv| !PROMOTED.contains(&kv.key()));
    s.attrs.build(rest, false);
    if s.attrs.is_empty() {
        return;
    }
    let mut labels = recycle(std::mem::take(&mut s.base));
    labels.extend(
        s.attrs
            .pairs()
            .filter(|(k, _)| !target.labels.as_slice().iter().any(|(t, _)| t == k)),
    );
    labels.extend_from_slice(target.labels.as_slice());
    let fam = out
        .store()
        .family("target_info", MetricType::Gauge, "Target metadata", "");
    out.write(fam, "target_info", &labels, 1.0, out.now_ms());
    s.base = recycle(labels);
}
