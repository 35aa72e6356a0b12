//! Counting what remote write requests carry, without building the prost tree: a walk
//! over the encoded `WriteRequest` (series keyed by their encoded labels, which a
//! Prometheus-shaped sender writes sorted and identically every time), and per series
//! the timestamps seen, to tell duplicates and out-of-order samples.

use std::collections::{BTreeSet, HashMap};

use crate::wire::{Fields, Value, WireError};

/// Timestamps of one series: in-order samples as arithmetic runs (a series scraped at a
/// fixed interval is one run), the rare out-of-order ones in a set.
#[derive(Debug, Default, Clone)]
pub struct Timestamps {
    /// (first, step, count); ascending, runs do not overlap.
    runs: Vec<(i64, i64, u64)>,
    stray: BTreeSet<i64>,
}

/// What one sample was, for its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    New,
    /// The series already had a sample at this timestamp.
    Duplicate,
    /// New, but older than the newest sample of its series.
    OutOfOrder,
}

impl Timestamps {
    fn last(&self) -> Option<i64> {
        self.runs
            .last()
            .map(|&(first, step, n)| first + step * (n as i64 - 1))
    }

    fn in_runs(&self, t: i64) -> bool {
        let i = self.runs.partition_point(|&(first, _, _)| first <= t);
        let Some(&(first, step, n)) = i.checked_sub(1).and_then(|i| self.runs.get(i)) else {
            return false;
        };
        let off = t - first;
        off == 0 || (step > 0 && off % step == 0 && ((off / step) as u64) < n)
    }

    /// Records `t`.
    pub fn record(&mut self, t: i64) -> Seen {
        match self.last() {
            Some(last) if t <= last => {
                if self.in_runs(t) || !self.stray.insert(t) {
                    Seen::Duplicate
                } else {
                    Seen::OutOfOrder
                }
            }
            _ => {
                // A stray above the newest in-order sample cannot exist: strays are older.
                match self.runs.last_mut() {
                    Some((first, step, n)) if *n == 1 => {
                        *step = t - *first;
                        *n = 2;
                    }
                    Some((first, step, n)) if t - (*first + *step * (*n as i64 - 1)) == *step => {
                        *n += 1;
                    }
                    _ => self.runs.push((t, 0, 1)),
                }
                Seen::New
            }
        }
    }
}

/// Counts of one request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RequestCounts {
    pub series: u64,
    pub samples: u64,
    pub histograms: u64,
    pub exemplars: u64,
    pub metadata: u64,
    /// Series without labels (Prometheus rejects them).
    pub unlabelled: u64,
}

/// One series of a request: its encoded labels and its sample timestamps.
struct SeriesView<'a> {
    key: Vec<&'a [u8]>,
    timestamps: Vec<i64>,
    histograms: u64,
    exemplars: u64,
}

/// Every sample's series and time, and what else the request holds.
pub struct Walk<'a> {
    series: Vec<SeriesView<'a>>,
    pub counts: RequestCounts,
}

/// Walks an encoded `WriteRequest`.
pub fn walk(req: &[u8]) -> Result<Walk<'_>, WireError> {
    let mut out = Walk {
        series: Vec::new(),
        counts: RequestCounts::default(),
    };
    let mut f = Fields::new(req);
    while let Some((n, v)) = f.next_field()? {
        match (n, v) {
            (1, Value::Len(ts)) => {
                let s = time_series(ts)?;
                let c = &mut out.counts;
                c.series += 1;
                c.samples += s.timestamps.len() as u64;
                c.histograms += s.histograms;
                c.exemplars += s.exemplars;
                c.unlabelled += u64::from(s.key.is_empty());
                out.series.push(s);
            }
            (3, Value::Len(_)) => out.counts.metadata += 1,
            _ => {}
        }
    }
    Ok(out)
}

fn time_series(ts: &[u8]) -> Result<SeriesView<'_>, WireError> {
    let mut s = SeriesView {
        key: Vec::new(),
        timestamps: Vec::new(),
        histograms: 0,
        exemplars: 0,
    };
    let mut f = Fields::new(ts);
    while let Some((n, v)) = f.next_field()? {
        match (n, v) {
            (1, Value::Len(label)) => s.key.push(label),
            (2, Value::Len(sample)) => s.timestamps.push(sample_time(sample)?),
            (3, Value::Len(_)) => s.exemplars += 1,
            (4, Value::Len(_)) => s.histograms += 1,
            _ => {}
        }
    }
    Ok(s)
}

fn sample_time(sample: &[u8]) -> Result<i64, WireError> {
    let mut t = 0;
    let mut f = Fields::new(sample);
    while let Some((n, v)) = f.next_field()? {
        if let (2, Value::Varint(x)) = (n, v) {
            t = x as i64;
        }
    }
    Ok(t)
}

/// Every series seen and its timestamps.
#[derive(Default)]
pub struct SeriesBook {
    series: HashMap<Box<[u8]>, Timestamps>,
    key: Vec<u8>,
    pub duplicates: u64,
    pub out_of_order: u64,
    pub highest_ms: Option<i64>,
    pub lowest_ms: Option<i64>,
}

impl SeriesBook {
    /// Distinct series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Records every sample of a walked request.
    pub fn record(&mut self, w: &Walk<'_>) {
        for s in &w.series {
            self.key.clear();
            for l in &s.key {
                // Length-prefixed, so label boundaries are part of the identity.
                self.key.extend_from_slice(&(l.len() as u32).to_le_bytes());
                self.key.extend_from_slice(l);
            }
            let ts = match self.series.get_mut(self.key.as_slice()) {
                Some(t) => t,
                None => self
                    .series
                    .entry(self.key.clone().into_boxed_slice())
                    .or_default(),
            };
            for &t in &s.timestamps {
                match ts.record(t) {
                    Seen::New => {}
                    Seen::Duplicate => self.duplicates += 1,
                    Seen::OutOfOrder => self.out_of_order += 1,
                }
                self.highest_ms = Some(self.highest_ms.map_or(t, |h| h.max(t)));
                self.lowest_ms = Some(self.lowest_ms.map_or(t, |l| l.min(t)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote_write::proto::{series, MetricMetadata, WriteRequest};
    use prost::Message;

    #[test]
    fn timestamps_tell_duplicates_and_reordering() {
        let mut t = Timestamps::default();
        let seen: Vec<Seen> = [15, 30, 45, 45, 30, 75, 60, 60, 90, 105, 5, 15]
            .iter()
            .map(|&x| t.record(x))
            .collect();
        use Seen::*;
        assert_eq!(
            seen,
            vec![
                New, New, New, Duplicate, Duplicate, New, OutOfOrder, Duplicate, New, New,
                OutOfOrder, Duplicate
            ]
        );
        assert_eq!(t.runs, vec![(15, 15, 3), (75, 15, 3)]);
    }

    #[test]
    fn walk_counts_series_samples_and_metadata() {
        let req = WriteRequest {
            timeseries: vec![
                series(
                    &[("__name__", "up"), ("job", "a")],
                    &[(1.0, 1000), (1.0, 2000)],
                ),
                series(&[("__name__", "up"), ("job", "b")], &[(0.0, 1000)]),
                series(&[], &[(0.0, 1000)]),
            ],
            metadata: vec![MetricMetadata {
                r#type: 2,
                metric_family_name: "up".into(),
                help: "h".into(),
                unit: String::new(),
            }],
        };
        let bytes = req.encode_to_vec();
        let w = walk(&bytes).unwrap();
        assert_eq!(
            w.counts,
            RequestCounts {
                series: 3,
                samples: 4,
                metadata: 1,
                unlabelled: 1,
                ..Default::default()
            }
        );
        let mut book = SeriesBook::default();
        book.record(&w);
        book.record(&w);
        assert_eq!(book.len(), 3);
        assert_eq!((book.duplicates, book.out_of_order), (4, 0));
        assert_eq!((book.lowest_ms, book.highest_ms), (Some(1000), Some(2000)));
        assert!(walk(&[0x0A, 0x05, 0x01]).is_err());
    }
}
