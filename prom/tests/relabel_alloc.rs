//! `process` allocates nothing when no rule changes a label: the remote-write
//! path runs it once per sample. A counting allocator checks it, counting
//! the test thread's allocations only.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use edgewatch_prom::relabel::{process, RelabelConfig};

struct Counting;

thread_local! {
    // `const` and without destructor: usable inside the allocator.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Allocations of one `process` call after a warm-up call on the same input.
fn allocations(rules: &str, input: &[(&str, &str)]) -> usize {
    let configs: Vec<RelabelConfig> = serde_yaml_ng::from_str(rules).unwrap();
    let mut warm = labels(input);
    process(&mut warm, &configs);
    let mut l = labels(input);
    let before = ALLOCATIONS.get();
    process(&mut l, &configs);
    ALLOCATIONS.get() - before
}

#[test]
fn unchanged_labels_cost_no_allocation() {
    let input = [
        ("__name__", "node_cpu_seconds_total"),
        ("cpu", "0"),
        ("instance", "n1:9100"),
        ("job", "node"),
        ("mode", "idle"),
    ];
    let no_change = "
- {source_labels: [__name__], regex: 'node_.*|up', action: keep}
- {source_labels: [__name__, mode], regex: 'go_.*;.*', action: drop}
- {source_labels: [job], target_label: instance, action: dropequal}
- {regex: 'tmp_.*', action: labeldrop}
- {regex: '__name__|cpu|instance|job|mode', action: labelkeep}
- {source_labels: [missing], regex: 'x(.*)', target_label: never, replacement: '$1'}
- {source_labels: [job], target_label: job, replacement: node}
- {regex: 'meta_(.+)', action: labelmap}
- {source_labels: [mode], target_label: mode, action: lowercase}
- {source_labels: [job], modulus: 1, target_label: cpu, action: hashmod}
";
    assert_eq!(allocations(no_change, &input), 0);
    // The check can fail: a new label allocates its name and value.
    let adds = "- {target_label: env, replacement: prod}";
    assert!(allocations(adds, &input) > 0);
}
