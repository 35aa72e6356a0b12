//! The collector buffer's on-disk decoders: active-segment entries, compacted
//! blocks and segment directory names, fed bytes as a corrupt disk would.
//!
//! Invariants: whatever decodes re-encodes and decodes to the same headers and
//! payload; a block's payload length is the sum of its entries' lengths; the
//! header-only decoders agree with the full ones; a name made by `segment_name`
//! parses back.
#![no_main]

use edgewatch_collector::buffer::fuzzing as f;
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

fn dict() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        f::make_dictionary(b"resource_metrics scope_metrics edgewatch ovms_requests_success")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some((h, payload)) = f::decode_entry(data, dict()) {
        assert_eq!(f::decode_entry_header(data), Some(h));
        assert_eq!(h.3, payload.len() as u64, "raw_len");
        let again = f::encode_entry(h, &payload, dict()).expect("encode entry");
        assert_eq!(f::decode_entry(&again, dict()), Some((h, payload)));
    }
    if let Some((headers, raw)) = f::decode_block(data) {
        assert_eq!(f::decode_block_headers(data).as_ref(), Some(&headers));
        let total: u64 = headers.iter().map(|h| h.3).sum();
        assert_eq!(total, raw.len() as u64, "block length");
        let again = f::encode_block(&headers, &raw).expect("encode block");
        assert_eq!(f::decode_block(&again), Some((headers, raw)));
    }
    if let Ok(name) = std::str::from_utf8(data) {
        if let Some((first, before, z)) = f::parse_segment_name(name) {
            assert_eq!(
                f::parse_segment_name(&f::segment_name(first, before, z)),
                Some((first, before, z))
            );
        }
    }
});
