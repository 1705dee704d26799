//! Counters a job keeps while it runs, and the summary it prints at the end.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// Process-wide counters, shared by every worker of the process.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records decoded and emitted on a source's record stream.
    pub records_in: AtomicU64,
    /// Payload bytes read.
    pub bytes_in: AtomicU64,
    /// Messages that failed to decode or carried an unusable timestamp.
    pub errors: AtomicU64,
    /// Records behind the watermark, sent to the late stream.
    pub late: AtomicU64,
    /// Records written by sinks and acknowledged.
    pub records_out: AtomicU64,
    /// Offset commits sent.
    pub commits: AtomicU64,
    /// Times a source paused its partitions for flow control.
    pub pauses: AtomicU64,
    /// The last offset committed per (topic, partition).
    pub committed: Mutex<BTreeMap<(String, i32), i64>>,
}

impl Metrics {
    /// Adds `n` to a counter.
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Records that `offset` was committed for `topic`/`partition`.
    pub fn committed(&self, topic: &str, partition: i32, offset: i64) {
        let mut map = self.committed.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry((topic.to_string(), partition)).or_insert(offset);
        *entry = (*entry).max(offset);
    }

    /// A snapshot of the counters with the elapsed time, for printing.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let committed = self
            .committed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Summary {
            records_in: self.records_in.load(Relaxed),
            errors: self.errors.load(Relaxed),
            late: self.late.load(Relaxed),
            records_out: self.records_out.load(Relaxed),
            commits: self.commits.load(Relaxed),
            pauses: self.pauses.load(Relaxed),
            committed,
            elapsed,
        }
    }
}

/// What a job did, printed when it ends.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Records read and emitted.
    pub records_in: u64,
    /// Malformed messages sent to the error stream.
    pub errors: u64,
    /// Late records sent to the late stream.
    pub late: u64,
    /// Records durably written by sinks.
    pub records_out: u64,
    /// Offset commits sent.
    pub commits: u64,
    /// Times a source paused its partitions because sinks were behind.
    pub pauses: u64,
    /// Last committed offset per (topic, partition).
    pub committed: BTreeMap<(String, i32), i64>,
    /// Wall-clock time the job ran.
    pub elapsed: Duration,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.records_in as f64 / secs
        } else {
            0.0
        };
        writeln!(f, "records in:        {} ({rate:.0}/s)", self.records_in)?;
        writeln!(f, "records out:       {}", self.records_out)?;
        writeln!(f, "malformed:         {}", self.errors)?;
        writeln!(f, "late:              {}", self.late)?;
        writeln!(f, "flow-control pauses: {}", self.pauses)?;
        let parts: Vec<String> = self
            .committed
            .iter()
            .map(|((t, p), o)| format!("{t}[{p}]={o}"))
            .collect();
        writeln!(
            f,
            "offsets committed: {} commits; {}",
            self.commits,
            parts.join(" ")
        )?;
        write!(f, "elapsed:           {secs:.3} s")
    }
}
