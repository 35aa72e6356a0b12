//! The collector's shallow decode of an OTLP export request.
//!
//! Invariants: it accepts exactly what prost's full decode accepts and counts the
//! same data points; re-encoding the shallow request (what the collector stores)
//! decodes to the same request as the original body, with the same count.
#![no_main]

use bytes::Bytes;
use edgewatch_otlp::shallow::decode_shallow;
use edgewatch_otlp::{count_points, decode_request};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let shallow = decode_shallow(Bytes::copy_from_slice(data));
    let full = decode_request(data);
    // An element-count cap may refuse what prost would decode; it says so.
    if let (Err(e), Ok(_)) = (&shallow, &full) {
        if is_limit(e) {
            return;
        }
    }
    assert_eq!(
        shallow.is_ok(),
        full.is_ok(),
        "shallow and prost disagree: {:?} vs {:?}",
        shallow.as_ref().err(),
        full.as_ref().err()
    );
    let (Ok((req, points)), Ok(full)) = (shallow, full) else {
        return;
    };
    assert_eq!(points, count_points(&full), "point count");
    let reencoded = req.encode_to_vec();
    let (_, again) = decode_shallow(Bytes::from(reencoded.clone())).expect("re-encoded decodes");
    assert_eq!(again, points, "point count after re-encoding");
    // Compared as bytes: NaN values make the structs unequal to themselves.
    let back = decode_request(&reencoded).expect("prost decodes the re-encoding");
    assert_eq!(
        back.encode_to_vec(),
        full.encode_to_vec(),
        "re-encoding changed the request"
    );
});

fn is_limit(e: &edgewatch_otlp::ExportError) -> bool {
    let text = e.to_string().to_ascii_lowercase();
    matches!(e, edgewatch_otlp::ExportError::TooLarge(_))
        || text.contains("limit")
        || text.contains("too many")
}
