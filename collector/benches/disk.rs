//! Bytes on disk per buffered data point, sled's files included (target ≤ 8 B on the
//! random-gauge payload, the worst case): 4,000 appends of 100 points, measured right
//! after the appends and once sealed segments are compacted. A size measured on a
//! quiet machine, not a behaviour, so it is a benchmark:
//! `cargo bench -p edgewatch-collector --bench disk` (exits 1 if the target is missed).

#[path = "../tests/support/disk.rs"]
mod disk;

use edgewatch_testkit::payloads;
use std::process::ExitCode;

const TARGET_BYTES_PER_POINT: f64 = 8.0;

fn main() -> ExitCode {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (random_now, random) = rt.block_on(disk::disk_per_point(payloads::otlp_100_points));
    let (typical_now, typical) =
        rt.block_on(disk::disk_per_point(payloads::otlp_100_points_typical));
    println!(
        "bytes on disk per point (4000 x 100 points): random gauges {random_now:.2} right \
         after the appends, {random:.2} compacted; typical {typical_now:.2} / {typical:.2}"
    );
    if random <= TARGET_BYTES_PER_POINT {
        println!("PASS: {random:.2} <= {TARGET_BYTES_PER_POINT} B/point");
        ExitCode::SUCCESS
    } else {
        println!("FAIL: {random:.2} > {TARGET_BYTES_PER_POINT} B/point");
        ExitCode::FAILURE
    }
}
