//! Stamping resource attributes on received metrics: pure, on prost types.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;

pub const CLUSTER_ATTR: &str = "k8s.cluster.name";
pub const NODE_ATTR: &str = "k8s.node.name";

/// The attributes this collector adds to every resource it receives.
#[derive(Debug, Clone)]
pub struct Stamp {
    attrs: Vec<(&'static str, String)>,
}

impl Stamp {
    pub fn new(cluster: &str, node: &str) -> Self {
        Stamp {
            attrs: vec![
                (CLUSTER_ATTR, cluster.to_string()),
                (NODE_ATTR, node.to_string()),
            ],
        }
    }

    /// Adds each attribute the sender did not set itself (a sender's own non-empty
    /// value wins, as with the OTel Collector's `resource` processor `insert` action)
    /// to every resource of a request.
    pub fn apply<'a>(&self, resources: impl IntoIterator<Item = &'a mut Option<Resource>>) {
        for resource in resources {
            let resource = resource.get_or_insert_with(Resource::default);
            for (key, value) in &self.attrs {
                let present = resource
                    .attributes
                    .iter()
                    .any(|kv| kv.key == *key && !is_empty(&kv.value));
                if !present {
                    resource.attributes.retain(|kv| kv.key != *key);
                    resource.attributes.push(string_kv(key, value));
                }
            }
        }
    }
}

/// An attribute with a string value, as every attribute the collector adds is.
pub fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

fn is_empty(v: &Option<AnyValue>) -> bool {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        None => true,
        Some(any_value::Value::StringValue(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// The node name: the configured one, else `$NODE_NAME` (the downward API in the
/// DaemonSet), else the hostname.
pub fn node_name(configured: Option<&str>) -> String {
    if let Some(n) = configured {
        return n.to_string();
    }
    if let Ok(n) = std::env::var("NODE_NAME") {
        if !n.trim().is_empty() {
            return n;
        }
    }
    hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;

    fn get<'a>(r: &'a ResourceMetrics, k: &str) -> Vec<&'a KeyValue> {
        r.resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .filter(|kv| kv.key == k)
            .collect()
    }

    #[test]
    fn stamps_missing_and_keeps_senders_values() {
        let mut req = ExportMetricsServiceRequest {
            resource_metrics: vec![
                ResourceMetrics::default(),
                ResourceMetrics {
                    resource: Some(Resource {
                        attributes: vec![
                            string_kv("k8s.node.name", "sender-node"),
                            string_kv("k8s.cluster.name", ""),
                        ],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ],
        };
        Stamp::new("edge-a", "node-1")
            .apply(req.resource_metrics.iter_mut().map(|rm| &mut rm.resource));
        let [a, b] = &req.resource_metrics[..] else {
            panic!("two resources")
        };
        assert_eq!(
            get(a, CLUSTER_ATTR),
            vec![&string_kv(CLUSTER_ATTR, "edge-a")]
        );
        assert_eq!(get(a, NODE_ATTR), vec![&string_kv(NODE_ATTR, "node-1")]);
        assert_eq!(
            get(b, NODE_ATTR),
            vec![&string_kv(NODE_ATTR, "sender-node")]
        );
        // An empty value counts as unset and is replaced, not duplicated.
        assert_eq!(
            get(b, CLUSTER_ATTR),
            vec![&string_kv(CLUSTER_ATTR, "edge-a")]
        );
    }

    #[test]
    fn node_name_prefers_config() {
        assert_eq!(node_name(Some("n1")), "n1");
        assert!(!node_name(None).is_empty());
    }
}
