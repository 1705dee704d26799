//! A source operator's metric handles: what it emitted, and where its partitions stand.

use std::time::{Duration, Instant};

use prometheus::IntCounter;

use super::partition::PartitionState;
use crate::metrics::Metrics;

/// A source operator's metric handles, resolved once per source and worker.
pub(crate) struct SourceMetrics {
    topic: String,
    records: IntCounter,
    malformed: IntCounter,
    late: IntCounter,
    last_report: Option<Instant>,
}

impl SourceMetrics {
    pub(crate) fn new(metrics: &Metrics, topic: &str) -> Self {
        let p = &metrics.prom;
        SourceMetrics {
            topic: topic.to_string(),
            records: p.source_records.with_label_values(&[topic]),
            malformed: p.malformed.with_label_values(&[topic]),
            late: p.late.with_label_values(&[topic]),
            last_report: None,
        }
    }

    /// Counts what one activation emitted.
    #[inline]
    pub(crate) fn emitted(&self, records: u64, malformed: u64, late: u64) {
        if records > 0 {
            self.records.inc_by(records);
        }
        if malformed > 0 {
            self.malformed.inc_by(malformed);
        }
        if late > 0 {
            self.late.inc_by(late);
        }
    }

    /// Publishes positions and watermark lag of `parts`, at most every 500 ms unless `force`.
    pub(crate) fn report(
        &mut self,
        metrics: &Metrics,
        parts: &[PartitionState],
        out_of_orderness: u64,
        now: Instant,
        now_ms: u64,
        force: bool,
    ) {
        if !force
            && self
                .last_report
                .is_some_and(|l| now.duration_since(l) < Duration::from_millis(500))
        {
            return;
        }
        self.last_report = Some(now);
        for p in parts {
            metrics.position(
                &self.topic,
                p.partition,
                p.first_offset,
                p.next_offset,
                p.released,
            );
            if p.next_offset.is_some() {
                let wm = p.watermark(out_of_orderness);
                metrics
                    .prom
                    .watermark_lag_ms
                    .with_label_values(&[&self.topic, &p.partition.to_string()])
                    .set(now_ms.saturating_sub(wm) as i64);
            }
        }
    }
}
