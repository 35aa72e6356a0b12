//! Byte mutations of encoded messages, for decoder tests: every mutation must be
//! rejected or decoded without panicking, and the two decoders must agree.

/// `n` copies of `base`, each with one to three random byte edits (set, flip a bit,
/// insert, remove, truncate), reproducible from `seed` (xorshift).
pub fn mutations(base: &[u8], seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut x = seed;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n).map(move |_| {
        let mut b = base.to_vec();
        for _ in 0..1 + next() % 3 {
            let i = (next() % b.len() as u64) as usize;
            match next() % 5 {
                0 => b[i] = next() as u8,
                1 => b[i] ^= 1 << (next() % 8),
                2 => b.insert(i, next() as u8),
                3 => {
                    b.remove(i);
                }
                _ => b.truncate(i),
            }
            if b.is_empty() {
                break;
            }
        }
        b
    })
}

/// How many of `mutations(base, seed, n)` `accepts` accepts and rejects.
pub fn verdicts(
    base: &[u8],
    seed: u64,
    n: usize,
    mut accepts: impl FnMut(&[u8]) -> bool,
) -> (usize, usize) {
    mutations(base, seed, n).fold(
        (0, 0),
        |(a, r), b| {
            if accepts(&b) {
                (a + 1, r)
            } else {
                (a, r + 1)
            }
        },
    )
}

/// Runs `n` mutations of `base` (from `seed`) through `accepts` and asserts that both
/// verdicts were exercised: more than `min` accepted and more than `min` rejected.
pub fn assert_both_verdicts(
    base: &[u8],
    seed: u64,
    n: usize,
    min: usize,
    accepts: impl FnMut(&[u8]) -> bool,
) {
    let (accepted, rejected) = verdicts(base, seed, n, accepts);
    assert!(
        accepted > min && rejected > min,
        "{accepted} accepted / {rejected} rejected"
    );
}

/// `request` encoded with the key of the first attribute of the second point of its
/// first metric (a gauge) made invalid UTF-8, for the decoders' error paths.
pub fn bad_gauge_attribute_key(
    mut request: opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
) -> Vec<u8> {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    use prost::Message;
    let m = &mut request.resource_metrics[0].scope_metrics[0].metrics[0];
    match &mut m.data {
        Some(Data::Gauge(g)) => g.data_points[1].attributes[0].key = "BAD-KEY".into(),
        other => panic!("the first metric is not a gauge: {other:?}"),
    }
    break_utf8(request.encode_to_vec(), b"BAD-KEY")
}

/// `bytes` with the first byte of `marker` replaced by 0xff, which no UTF-8
/// string holds.
pub fn break_utf8(mut bytes: Vec<u8>, marker: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("marker in the encoding");
    bytes[at] = 0xff;
    bytes
}

/// Whether prost's verdict on `bytes` (`full`) and another decoder's (`ours`, named
/// `ours_name` in the panic) agree: both accept (then `same` compares the two
/// readings) gives true, both reject false, and a disagreement panics naming both
/// verdicts and the input.
pub fn agree_with_prost<F, FE, O, E: std::fmt::Debug>(
    bytes: &[u8],
    full: Result<F, FE>,
    ours_name: &str,
    ours: Result<O, E>,
    same: impl FnOnce(F, O),
) -> bool {
    match (full, ours) {
        (Ok(f), Ok(o)) => {
            same(f, o);
            true
        }
        (Err(_), Err(_)) => false,
        (f, o) => panic!(
            "prost {} but {ours_name} {} for {bytes:?}",
            if f.is_ok() { "accepts" } else { "rejects" },
            match o {
                Ok(_) => "accepts".to_string(),
                Err(e) => format!("rejects ({e:?})"),
            }
        ),
    }
}
