use super::*;
use edgewatch_otlp::shallow::decode_shallow;
use edgewatch_otlp::ExportMetricsServiceRequest;
use edgewatch_testkit::otlp::{gauge, kv, point, request};
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;

/// `resources` resources of `scopes` scopes of one metric of `points` points each.
fn req(resources: usize, scopes: usize, points: usize) -> ExportMetricsServiceRequest {
    let rm = |r: usize| -> ResourceMetrics {
        let mut one = request(
            vec![kv("service.name", format!("svc-{r}"))],
            Some("s"),
            vec![],
        );
        let mut rm = one.resource_metrics.remove(0);
        let sm = rm.scope_metrics.remove(0);
        rm.scope_metrics = (0..scopes)
            .map(|s| {
                let mut sm = sm.clone();
                let pts = (0..points)
                    .map(|i| point(vec![kv("series", format!("{r}-{s}-{i}"))], 1, 1.0))
                    .collect();
                sm.metrics = vec![gauge("m", pts)];
                sm
            })
            .collect();
        rm
    };
    ExportMetricsServiceRequest {
        resource_metrics: (0..resources).map(rm).collect(),
    }
}

fn split(r: &ExportMetricsServiceRequest, limit: usize) -> Result<Vec<(u64, Bytes)>, Oversized> {
    let (shallow, points) = decode_shallow(Bytes::from(r.encode_to_vec())).unwrap();
    entries(shallow, points, limit)
}

/// Every entry within the limit, points counted right, and the entries together
/// say what the request said: the same scopes under the same resources, in order.
fn check(r: &ExportMetricsServiceRequest, limit: usize, want_entries: usize) {
    let got = split(r, limit).unwrap();
    assert_eq!(got.len(), want_entries);
    let mut scopes = Vec::new();
    for (n, body) in &got {
        assert!(body.len() <= limit, "{} > {limit}", body.len());
        let e = ExportMetricsServiceRequest::decode(body.clone()).unwrap();
        assert_eq!(*n, edgewatch_otlp::count_points(&e));
        for rm in e.resource_metrics {
            for sm in rm.scope_metrics {
                scopes.push((rm.resource.clone(), sm));
            }
        }
    }
    let want: Vec<_> = r
        .resource_metrics
        .iter()
        .flat_map(|rm| {
            rm.scope_metrics
                .iter()
                .map(|sm| (rm.resource.clone(), sm.clone()))
        })
        .collect();
    assert_eq!(scopes, want);
}

#[test]
fn a_request_within_the_limit_is_one_entry_as_is() {
    let r = req(3, 2, 5);
    let got = split(&r, r.encoded_len()).unwrap();
    assert_eq!(got, vec![(30, Bytes::from(r.encode_to_vec()))]);
}

#[test]
fn a_large_request_is_cut_at_resources() {
    let r = req(10, 1, 20);
    let one = r.resource_metrics[0].encoded_len() + 3;
    // Three resources per entry.
    check(&r, one * 3 + 2, 4);
}

#[test]
fn a_resource_over_the_limit_is_repeated_with_part_of_its_scopes() {
    let r = req(2, 10, 20);
    let scope = r.resource_metrics[0].scope_metrics[0].encoded_len() + 3;
    let resource = r.resource_metrics[0]
        .resource
        .as_ref()
        .unwrap()
        .encoded_len()
        + 2;
    // Four scopes and their resource per entry: 3 entries for each resource.
    check(&r, resource + 4 * scope + 8, 6);
}

#[test]
fn a_scope_over_the_limit_refuses_the_request() {
    let mut r = req(3, 2, 5);
    r.resource_metrics[1].scope_metrics[1] =
        req(1, 1, 500).resource_metrics[0].scope_metrics[0].clone();
    let limit = r.resource_metrics[0].encoded_len() * 2;
    let e = split(&r, limit).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.starts_with("resource_metrics[1].scope_metrics[1] takes ")
            && shown.contains(&format!("limit of {limit} bytes")),
        "{shown}"
    );
}
