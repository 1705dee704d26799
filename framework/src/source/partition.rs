//! Per-partition read position and watermark, and the worker watermark over them.

use std::time::{Duration, Instant};

/// What a source worker knows about one of its partitions.
#[derive(Clone, Debug)]
pub struct PartitionState {
    /// The partition number.
    pub partition: i32,
    /// The offset after the last message read, if any was read.
    pub next_offset: Option<i64>,
    /// The offset of the first message read this run, if any was read.
    pub first_offset: Option<i64>,
    /// Largest event time seen.
    max_event: Option<u64>,
    /// Since when the partition has been at its end with nothing new while being read
    /// (restarted by every [`PartitionState::interrupt`]).
    at_end_since: Option<Instant>,
    /// Bounded mode: the partition reached its end and is no longer read.
    pub released: bool,
}

impl PartitionState {
    /// A partition nothing has been read from yet.
    pub fn new(partition: i32) -> Self {
        PartitionState {
            partition,
            next_offset: None,
            first_offset: None,
            max_event: None,
            at_end_since: None,
            released: false,
        }
    }

    /// Resumes from a checkpoint: the next offset to read and the largest event time
    /// seen before it.
    pub fn restore(&mut self, next_offset: i64, max_event: Option<u64>) {
        self.next_offset = Some(next_offset);
        self.max_event = max_event;
    }

    /// The largest event time seen, if any.
    pub fn max_event(&self) -> Option<u64> {
        self.max_event
    }

    /// A message at `offset` was read (whatever became of it).
    pub fn read(&mut self, offset: i64) {
        self.next_offset = Some(offset + 1);
        self.first_offset.get_or_insert(offset);
        self.at_end_since = None;
    }

    /// A record with event time `event` was read.
    pub fn observe(&mut self, event: u64) {
        self.max_event = Some(self.max_event.map_or(event, |m| m.max(event)));
    }

    /// The client reported the end of the partition.
    pub fn reached_end(&mut self, now: Instant) {
        self.at_end_since.get_or_insert(now);
    }

    /// The partition was not being read at `now` (paused, fetches failing, the source
    /// blocked in a metadata refresh): whatever quiet time it had does not count, and
    /// its idle time starts again from `now`. It stays at its end: a message read
    /// afterwards makes it active.
    pub fn interrupt(&mut self, now: Instant) {
        if let Some(since) = self.at_end_since.as_mut() {
            *since = now;
        }
    }

    /// True if at the end, with nothing new, for at least `idle`.
    pub fn caught_up(&self, now: Instant, idle: Duration) -> bool {
        self.at_end_since
            .is_some_and(|since| now.duration_since(since) >= idle)
    }

    /// Largest event time seen minus the allowed out-of-orderness (0 before any record).
    pub fn watermark(&self, out_of_orderness: u64) -> u64 {
        self.max_event
            .map_or(0, |m| m.saturating_sub(out_of_orderness))
    }
}

/// Inputs to the worker watermark besides the partitions.
#[derive(Clone, Copy, Debug)]
pub struct WatermarkRule {
    /// Allowed out-of-orderness, ms.
    pub out_of_orderness: u64,
    /// How long a partition at its end must stay quiet to stop holding the watermark.
    pub idle: Duration,
    /// When every partition is idle, advance with the wall clock (`--idle-advance`)
    /// instead of holding.
    pub idle_advance: bool,
}

/// The watermark a worker may advance to (callers keep the max with the previous one).
///
/// * no partitions (or all released): `u64::MAX`, never holding event time back;
/// * otherwise the least watermark of the partitions not caught up;
/// * if every partition is caught up: 0 — the worker **holds** its watermark, because
///   the next record of any of them may be dated anywhere after what it has seen;
///   with [`WatermarkRule::idle_advance`] the largest partition watermark, or the wall
///   clock less out-of-orderness and idle time if that is later (for streams whose
///   event time tracks the wall clock).
pub fn worker_watermark(
    parts: &[PartitionState],
    rule: WatermarkRule,
    now: Instant,
    now_ms: u64,
) -> u64 {
    let live = parts.iter().filter(|p| !p.released);
    let active = live.clone().filter(|p| !p.caught_up(now, rule.idle));
    if let Some(w) = active.map(|p| p.watermark(rule.out_of_orderness)).min() {
        return w;
    }
    let mut live = live.peekable();
    if live.peek().is_none() {
        return u64::MAX;
    }
    if !rule.idle_advance {
        return 0;
    }
    let highest = live
        .map(|p| p.watermark(rule.out_of_orderness))
        .max()
        .unwrap_or(0);
    let idle_ms = rule.idle.as_millis() as u64;
    highest.max(now_ms.saturating_sub(rule.out_of_orderness + idle_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: WatermarkRule = WatermarkRule {
        out_of_orderness: 10,
        idle: Duration::from_millis(100),
        idle_advance: true,
    };
    const HOLD: WatermarkRule = WatermarkRule {
        idle_advance: false,
        ..RULE
    };

    #[test]
    fn least_over_active_partitions() {
        let now = Instant::now();
        let mut a = PartitionState::new(0);
        let mut b = PartitionState::new(1);
        a.observe(500);
        b.observe(300);
        b.observe(200);
        assert_eq!(worker_watermark(&[a.clone(), b.clone()], RULE, now, 0), 290);
        // A partition at its end but not yet idle for long enough still holds.
        b.reached_end(now);
        assert_eq!(worker_watermark(&[a.clone(), b.clone()], RULE, now, 0), 290);
        let later = now + Duration::from_millis(150);
        assert_eq!(
            worker_watermark(&[a.clone(), b.clone()], RULE, later, 0),
            490
        );
        // A backlogged partition that has read nothing holds at 0.
        let c = PartitionState::new(2);
        assert_eq!(worker_watermark(&[a, c], RULE, later, 0), 0);
    }

    #[test]
    fn a_message_after_the_end_makes_a_partition_active_again() {
        let now = Instant::now();
        let mut p = PartitionState::new(0);
        p.reached_end(now);
        p.read(4);
        assert!(!p.caught_up(now + Duration::from_secs(1), RULE.idle));
        assert_eq!(p.next_offset, Some(5));
    }

    #[test]
    fn no_partitions_or_all_idle() {
        let now = Instant::now();
        assert_eq!(worker_watermark(&[], RULE, now, 5_000), u64::MAX);
        let mut p = PartitionState::new(0);
        p.observe(1_000);
        p.reached_end(now);
        let later = now + Duration::from_millis(200);
        assert_eq!(
            worker_watermark(&[p.clone()], RULE, later, 5_000),
            5_000 - 110
        );
        assert_eq!(worker_watermark(&[p.clone()], RULE, later, 500), 990);
        assert_eq!(
            worker_watermark(&[p.clone()], HOLD, later, 5_000),
            0,
            "holds"
        );
        p.released = true;
        assert_eq!(worker_watermark(&[p], RULE, later, 500), u64::MAX);
    }

    #[test]
    fn an_interrupted_partition_is_not_idle_until_read_again_for_the_timeout() {
        let now = Instant::now();
        let mut a = PartitionState::new(0);
        let mut b = PartitionState::new(1);
        a.observe(500);
        b.observe(300);
        b.reached_end(now);
        // Paused or failing for 150 ms: the quiet time while not reading does not count.
        let later = now + Duration::from_millis(150);
        b.interrupt(later);
        assert!(!b.caught_up(later, HOLD.idle));
        assert_eq!(
            worker_watermark(&[a.clone(), b.clone()], HOLD, later, 0),
            290
        );
        let idle = later + Duration::from_millis(100);
        assert!(b.caught_up(idle, HOLD.idle));
        assert_eq!(worker_watermark(&[a, b], HOLD, idle, 0), 490);
        // A partition never at its end stays active whatever happens.
        let mut c = PartitionState::new(2);
        c.interrupt(idle);
        assert!(!c.caught_up(idle + Duration::from_secs(10), HOLD.idle));
    }
}
