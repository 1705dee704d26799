//! Which offsets may be committed for which epochs: the one rule every source follows.
//!
//! The Kafka source and the test harness's sources both keep an [`OffsetLedger`], so a
//! job that passes under [`crate::testing::Harness`] commits the same offsets against a
//! broker.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::error::Result;
use crate::metrics::Metrics;

/// One partition's next offset to read: `(partition, offset)`.
pub type Position = (i32, i64);

/// One source's positions at the end of each epoch, and what has been committed.
///
/// A source calls [`OffsetLedger::end_epoch`] with the next offset of each partition
/// when an epoch ends, and [`OffsetLedger::commit_complete`] with the commit tracker's
/// bound; the ledger decides what to commit: the positions of the newest complete epoch,
/// for the partitions they move forward (a committed offset never moves backwards).
///
/// A commit counts once the broker accepted it (commits are synchronous); a failed one
/// ([`crate::Error`] from `send`) is sent again with the next commit, so the
/// committed-offset metrics always show what the broker accepted.
pub struct OffsetLedger {
    topic: String,
    /// `(epoch, positions)`, oldest first; no two neighbours hold the same positions.
    ends: VecDeque<(u64, Vec<Position>)>,
    /// What the broker accepted.
    accepted: BTreeMap<i32, i64>,
    /// Positions of a failed commit, to send again.
    retry: BTreeMap<i32, i64>,
    metrics: Arc<Metrics>,
}

impl OffsetLedger {
    /// An empty ledger of `topic`'s source, counting commits in `metrics`.
    pub fn new(topic: &str, metrics: Arc<Metrics>) -> Self {
        OffsetLedger {
            topic: topic.to_string(),
            ends: VecDeque::new(),
            accepted: BTreeMap::new(),
            retry: BTreeMap::new(),
            metrics,
        }
    }

    /// Records the positions reached at the end of `epoch` (again for the same epoch:
    /// the newer positions replace the older). Positions equal to the previous epoch's
    /// are not kept: committing them again would change nothing.
    pub fn end_epoch(&mut self, epoch: u64, positions: impl IntoIterator<Item = Position>) {
        let positions: Vec<Position> = positions.into_iter().collect();
        if let Some((e, last)) = self.ends.back_mut() {
            if *e == epoch {
                *last = positions;
                return;
            }
            if *last == positions {
                return;
            }
        }
        self.ends.push_back((epoch, positions));
    }

    /// Commits the newest epoch below `complete_below`: `send` gets that epoch and the
    /// positions that move a committed offset forward, plus positions of a failed commit
    /// not yet superseded (it is not called when there are none), and returns once the
    /// broker accepted them; they then count as committed (one commit in the metrics).
    /// Older epochs are dropped either way: their positions are behind the newest one's.
    pub fn commit_complete(
        &mut self,
        complete_below: u64,
        send: impl FnOnce(u64, &[Position]) -> Result<()>,
    ) -> Result<()> {
        let mut newest = None;
        while self.ends.front().is_some_and(|(e, _)| *e < complete_below) {
            newest = self.ends.pop_front();
        }
        let (epoch, positions) = newest.unwrap_or((complete_below.saturating_sub(1), Vec::new()));
        let mut forward: BTreeMap<i32, i64> = std::mem::take(&mut self.retry);
        for (p, off) in positions {
            if self.accepted.get(&p).is_none_or(|&c| off > c) {
                forward.insert(p, off);
            }
        }
        let forward: Vec<Position> = forward.into_iter().collect();
        if forward.is_empty() {
            return Ok(());
        }
        match send(epoch, &forward) {
            Err(e) => {
                Metrics::add(&self.metrics.commit_failures, 1);
                self.retry.extend(forward);
                Err(e)
            }
            Ok(()) => {
                Metrics::add(&self.metrics.commits, 1);
                for &(p, off) in &forward {
                    let a = self.accepted.entry(p).or_insert(off);
                    *a = (*a).max(off);
                    self.metrics.committed(&self.topic, p, off);
                }
                tracing::debug!(topic = %self.topic, epoch, "committed complete epoch");
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering::Relaxed;

    fn commit(ledger: &mut OffsetLedger, below: u64) -> Option<(u64, Vec<Position>)> {
        let mut sent = None;
        ledger
            .commit_complete(below, |e, p| {
                sent = Some((e, p.to_vec()));
                Ok(())
            })
            .unwrap();
        sent
    }

    #[test]
    fn commits_the_newest_complete_epoch_once_and_never_backwards() {
        let metrics = Arc::new(Metrics::default());
        let mut l = OffsetLedger::new("t", metrics.clone());
        l.end_epoch(3, [(0, 5), (1, 2)]);
        l.end_epoch(3, [(0, 6), (1, 2)]); // the same epoch again: replaces
        l.end_epoch(4, [(0, 6), (1, 2)]); // unchanged: not kept
        l.end_epoch(5, [(0, 7), (1, 2)]);
        assert_eq!(commit(&mut l, 3), None, "epoch 3 is not complete");
        assert_eq!(commit(&mut l, 5), Some((3, vec![(0, 6), (1, 2)])));
        assert_eq!(commit(&mut l, 5), None, "nothing new");
        assert_eq!(
            commit(&mut l, 6),
            Some((5, vec![(0, 7)])),
            "only what moved"
        );
        assert_eq!(metrics.commits.load(Relaxed), 2, "one commit per call");
        assert_eq!(metrics.summary(Default::default()).committed.len(), 2);
    }

    #[test]
    fn a_failed_send_commits_nothing_and_the_next_epoch_carries_it() {
        let metrics = Arc::new(Metrics::default());
        let mut l = OffsetLedger::new("t", metrics.clone());
        l.end_epoch(0, [(0, 5)]);
        l.end_epoch(1, [(0, 6)]);
        let failed = l.commit_complete(1, |_, _| Err(crate::Error::Config("down".into())));
        assert!(failed.is_err());
        assert_eq!(metrics.commits.load(Relaxed), 0);
        assert_eq!(metrics.commit_failures.load(Relaxed), 1);
        assert_eq!(commit(&mut l, 2), Some((1, vec![(0, 6)])));
    }
}
