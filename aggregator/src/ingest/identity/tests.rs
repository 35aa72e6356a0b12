use super::*;
use crate::expose::{render, Format};
use crate::ingest::IngestSink;
use crate::store::{Selector, Store, StoreOptions};
use crate::wal::Wal;
use bytes::Bytes;
use edgewatch_config::auth::{ClusterToken, ClusterTokens};
use edgewatch_otlp::{BatchInfo, ExportOutcome, MetricsSink};
use edgewatch_testkit::otlp::{gauge, kv, now_nanos, point, request};
use prost::Message;

fn tokens(pairs: &[(&str, &str)]) -> AuthConfig {
    let dir = tempfile::tempdir().unwrap();
    let clusters = pairs
        .iter()
        .map(|(cluster, token)| {
            let path = dir.path().join(cluster);
            std::fs::write(&path, format!("{token}\n")).unwrap();
            ClusterToken {
                cluster: cluster.to_string(),
                token: edgewatch_config::auth::read_token_file(&path).unwrap(),
                token_file: path,
            }
        })
        .collect();
    AuthConfig {
        clusters: ClusterTokens(clusters),
    }
}

/// Every combination of configuration and credentials, and what it proves.
#[test]
fn the_identity_decision() {
    use Failure::*;
    let none = AuthConfig::default();
    let two = tokens(&[("edge-a", "tok-a"), ("edge-b", "tok-b")]);
    let open = Policy::new(&none, false);
    let by_token = Policy::new(&two, false);
    let by_cert = Policy::new(&none, true);
    let both = Policy::new(&two, true);
    type Case<'a> = (
        &'a Policy,
        Option<&'a str>,
        Option<&'a str>,
        Result<Option<&'a str>, Failure>,
    );
    let cases: &[Case<'_>] = &[
        // Nothing configured: nothing required, nothing proven.
        (&open, None, None, Ok(None)),
        (&open, Some("edge-a"), Some("tok-a"), Ok(None)),
        // Tokens.
        (&by_token, None, Some("tok-a"), Ok(Some("edge-a"))),
        (&by_token, None, Some("tok-b"), Ok(Some("edge-b"))),
        (&by_token, None, None, Err(Missing)),
        (&by_token, None, Some("tok-c"), Err(InvalidToken)),
        (&by_token, None, Some("tok-a "), Err(InvalidToken)),
        (&by_token, None, Some("edge-a"), Err(InvalidToken)),
        // A CN without a client CA configured proves nothing; the token decides.
        (&by_token, Some("edge-b"), Some("tok-a"), Ok(Some("edge-a"))),
        // Client certificates: the CN is the cluster.
        (&by_cert, Some("edge-a"), None, Ok(Some("edge-a"))),
        (&by_cert, Some("edge-z"), None, Ok(Some("edge-z"))),
        (
            &by_cert,
            Some("edge-a"),
            Some("anything"),
            Ok(Some("edge-a")),
        ),
        (&by_cert, None, None, Err(NoClientCert)),
        (&by_cert, None, Some("tok-a"), Err(NoClientCert)),
        (&by_cert, Some(""), None, Err(InvalidClientCert)),
        // Both: the certificate decides among the listed clusters; a token must agree.
        (&both, Some("edge-a"), None, Ok(Some("edge-a"))),
        (&both, Some("edge-a"), Some("tok-a"), Ok(Some("edge-a"))),
        (&both, Some("edge-z"), None, Err(UnknownCluster)),
        (&both, Some("edge-a"), Some("tok-b"), Err(ClusterMismatch)),
        (&both, Some("edge-a"), Some("tok-c"), Err(InvalidToken)),
        (&both, None, Some("tok-a"), Err(NoClientCert)),
    ];
    for (i, (policy, cn, token, want)) in cases.iter().enumerate() {
        let got = policy.decide(*cn, *token);
        let got = got.as_ref().map(|c| c.as_deref()).map_err(|f| *f);
        assert_eq!(got, *want, "case {i}: cn {cn:?}, token {token:?}");
    }
    assert!(open.is_open() && !by_token.is_open() && !by_cert.is_open());
}

#[test]
fn namespaced_ids_cannot_collide_with_plain_ones() {
    assert_eq!(namespaced("edge-a", "col-1"), "edge-a\u{1f}col-1");
    assert_ne!(namespaced("edge-a", "col-1"), namespaced("edge-b", "col-1"));
    // What a header can carry never holds the separator.
    assert!(axum::http::HeaderValue::from_str(&namespaced("a", "b")).is_err());
}

struct Core {
    store: Arc<Store>,
    wal: Arc<Wal>,
    sink: IngestSink,
    registry: Registry,
    _dir: tempfile::TempDir,
}

fn core(auth: &AuthConfig) -> Core {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::new();
    let store = Arc::new(Store::new(StoreOptions::default(), &registry));
    let wal = Wal::open(&dir.path().join("wal"), &registry).unwrap();
    store.set_wal(wal.clone());
    let gate = Gate::new(Policy::new(auth, false), &registry).unwrap();
    let sink = IngestSink::new(store.clone(), wal.clone(), 4 << 20, gate, &registry).unwrap();
    Core {
        store,
        wal,
        sink,
        registry,
        _dir: dir,
    }
}

impl Core {
    /// Every series in the store, as `/federate` shows them.
    fn dump(&self) -> String {
        let now = crate::now_ms();
        let sel = self
            .store
            .select(&Selector::parse(r#"{__name__=~".+"}"#).unwrap(), now);
        let mut out = Vec::new();
        render(&sel, Format::Text, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn metric(&self, series: &str) -> f64 {
        edgewatch_testkit::Metrics::from_registry(&self.registry).get(series)
    }
}

/// One encoded request from `cluster` (as `k8s.cluster.name`; None: not said).
fn claiming(cluster: Option<&str>, metric: &str, value: f64) -> Vec<u8> {
    let mut resource = vec![kv("service.name", "svc")];
    resource.extend(cluster.map(|c| kv("k8s.cluster.name", c)));
    let points = vec![point(
        vec![kv("cluster", "from-a-point")],
        now_nanos(),
        value,
    )];
    request(resource, Some("scope"), vec![gauge(metric, points)]).encode_to_vec()
}

fn ctx(token: Option<&str>, batch: Option<(&str, u64, usize)>) -> ExportContext {
    ExportContext {
        bearer_token: token.map(str::to_owned),
        batch: batch.map(|(id, first_seq, len)| BatchInfo {
            collector_id: id.into(),
            first_seq,
            entry_lens: vec![len],
            floor: first_seq,
        }),
        ..ExportContext::default()
    }
}

async fn send(
    c: &Core,
    body: Vec<u8>,
    token: Option<&str>,
    batch: Option<(&str, u64)>,
) -> Result<ExportOutcome, ExportError> {
    let len = body.len();
    let ctx = ctx(token, batch.map(|(id, seq)| (id, seq, len)));
    c.sink.export(Bytes::from(body), ctx).await
}

#[tokio::test]
async fn the_authenticated_cluster_overwrites_what_the_sender_claims() {
    let c = core(&tokens(&[("edge-a", "tok-a"), ("edge-b", "tok-b")]));
    send(
        &c,
        claiming(Some("edge-b"), "claimed_b", 1.0),
        Some("tok-a"),
        None,
    )
    .await
    .unwrap();
    send(
        &c,
        claiming(None, "claimed_none", 2.0),
        Some("tok-a"),
        Some(("col", 0)),
    )
    .await
    .unwrap();
    send(
        &c,
        claiming(Some("edge-a"), "claimed_a", 3.0),
        Some("tok-a"),
        None,
    )
    .await
    .unwrap();
    let dump = c.dump();
    for m in ["claimed_b", "claimed_none", "claimed_a"] {
        let line = dump
            .lines()
            .find(|l| l.starts_with(&format!("{m}{{")))
            .unwrap_or_else(|| panic!("{m} stored:\n{dump}"));
        assert!(line.contains(r#"cluster="edge-a""#), "{line}");
    }
    assert!(
        !dump.contains("edge-b") && !dump.contains("from-a-point"),
        "{dump}"
    );
    // Only the differing claim counts.
    assert_eq!(
        c.metric(r#"edgewatch_identity_overrides_total{cluster="edge-a"}"#),
        1.0
    );
    c.wal.close();
}

#[tokio::test]
async fn without_valid_credentials_nothing_is_stored_and_no_window_moves() {
    let c = core(&tokens(&[("edge-a", "tok-a")]));
    for (token, reason) in [(None, "missing"), (Some("tok-x"), "invalid_token")] {
        let body = claiming(Some("edge-a"), "g", 1.0);
        match send(&c, body, token, Some(("col", 0))).await {
            Err(ExportError::Unauthenticated(m)) => assert!(!m.contains("tok-"), "{m}"),
            other => panic!("UNAUTHENTICATED, got {other:?}"),
        }
        assert_eq!(
            c.metric(&format!(
                r#"edgewatch_auth_failures_total{{reason="{reason}"}}"#
            )),
            1.0
        );
    }
    assert_eq!(c.store.series_count(), 0);
    let mut records = 0;
    c.wal.replay(i64::MIN, |_| records += 1);
    assert_eq!(records, 0, "nothing logged");
    assert_eq!(c.wal.window(&namespaced("edge-a", "col")).unwrap(), None);
    assert_eq!(c.wal.window("col").unwrap(), None);
    // The same batch with the token is taken: it was not recorded as seen.
    send(
        &c,
        claiming(Some("edge-a"), "g", 1.0),
        Some("tok-a"),
        Some(("col", 0)),
    )
    .await
    .unwrap();
    assert!(c.dump().contains(r#"g{cluster="edge-a""#), "{}", c.dump());
    c.wal.close();
}

/// A token for edge-a reusing edge-b's collector id, with a floor far ahead,
/// moves only its own window: edge-b's next batch is not taken for a replay.
#[tokio::test]
async fn one_cluster_cannot_poison_another_collectors_replay_state() {
    let c = core(&tokens(&[("edge-a", "tok-a"), ("edge-b", "tok-b")]));
    send(
        &c,
        claiming(None, "b_first", 1.0),
        Some("tok-b"),
        Some(("col-b", 0)),
    )
    .await
    .unwrap();
    let forged = claiming(None, "forged", 1.0);
    let len = forged.len();
    let mut forged_ctx = ctx(Some("tok-a"), Some(("col-b", 1_000_000, len)));
    if let Some(b) = forged_ctx.batch.as_mut() {
        b.floor = 1_000_000;
    }
    c.sink
        .export(Bytes::from(forged), forged_ctx)
        .await
        .unwrap();
    send(
        &c,
        claiming(None, "b_second", 2.0),
        Some("tok-b"),
        Some(("col-b", 1)),
    )
    .await
    .unwrap();
    let dump = c.dump();
    assert!(dump.contains(r#"b_second{cluster="edge-b""#), "{dump}");
    assert!(dump.contains(r#"forged{cluster="edge-a""#), "{dump}");
    assert_eq!(c.metric("edgewatch_ingest_duplicate_batches_total"), 0.0);
    c.wal.close();
}
