//! Grouping one poll's records by event time, so a source sends one message per
//! distinct time and moves each record once.
//!
//! A source's poll yields records in arrival order with times at or above its
//! watermark `W`, mostly within the allowed out-of-orderness of each other. [`ByTime`]
//! drops each record into a bucket indexed by `(t - W) / tick`, a counting sort that
//! costs one move per record and keeps arrival order within a time; the buckets are
//! then handed out, in increasing time, as whole containers (`give_container`), so the
//! records are not copied again into a session buffer. Times too far above `W` for
//! the bucket array (an absurd timestamp, a partition far ahead) go to a side list
//! that is sorted; results are the same either way.
//!
//! The tick divisions (rounding a time down, finding its bucket) go through a
//! precomputed reciprocal ([`strength_reduce`]): two hardware divisions per record
//! were a visible share of a source's per-record cost.

use strength_reduce::StrengthReducedU64;

/// At most this many buckets: enough for 4 s of disorder at 1 ms ticks.
const MAX_BUCKETS: u64 = 4096;

/// Records grouped by event time, for one poll at a time.
///
/// # Examples
/// ```
/// use freshet::source::ByTime;
///
/// let mut groups = ByTime::new(10);
/// groups.begin(100);
/// for (t, r) in [(120, 'a'), (100, 'b'), (120, 'c'), (990_000, 'd')] {
///     groups.push(t, r);
/// }
/// let mut out = Vec::new();
/// groups.drain(|t, records| out.push((t, std::mem::take(records))));
/// assert_eq!(out, vec![(100, vec!['b']), (120, vec!['a', 'c']), (990_000, vec!['d'])]);
/// ```
#[derive(Debug)]
pub struct ByTime<D> {
    tick: StrengthReducedU64,
    base: u64,
    buckets: Vec<Vec<D>>,
    /// One past the highest bucket used since [`ByTime::begin`].
    used: usize,
    far: Vec<(u64, D)>,
    len: usize,
    /// Capacity given to an empty bucket on its first record: the largest group of
    /// the last poll (buckets handed out whole come back empty).
    hint: usize,
}

impl<D> ByTime<D> {
    /// Groups for times rounded down to multiples of `tick` ms (the source's tick; 1 =
    /// exact).
    pub fn new(tick: u64) -> Self {
        ByTime {
            tick: StrengthReducedU64::new(tick.max(1)),
            base: 0,
            buckets: Vec::new(),
            used: 0,
            far: Vec::new(),
            len: 0,
            hint: 0,
        }
    }

    /// The tick, ms.
    pub fn tick(&self) -> u64 {
        self.tick.get()
    }

    /// `t` rounded down to a multiple of the tick.
    #[inline]
    pub fn round(&self, t: u64) -> u64 {
        if self.tick.get() == 1 {
            t
        } else {
            t - t % self.tick
        }
    }

    /// Starts a poll whose records all have times at or above `watermark`. Records
    /// pushed before must have been drained.
    pub fn begin(&mut self, watermark: u64) {
        debug_assert!(self.is_empty(), "ByTime::begin with records not drained");
        self.base = self.round(watermark);
    }

    /// Adds `record` at time `t` rounded down to the tick ([`ByTime::round`]); `t` must
    /// be at or above the watermark given to [`ByTime::begin`].
    #[inline]
    pub fn push(&mut self, t: u64, record: D) {
        debug_assert!(t >= self.base, "time {t} below the watermark {}", self.base);
        self.len += 1;
        let offset = t.saturating_sub(self.base);
        let index = if self.tick.get() == 1 {
            offset
        } else {
            offset / self.tick
        };
        if index >= MAX_BUCKETS {
            self.far.push((self.base + index * self.tick.get(), record));
            return;
        }
        let index = index as usize;
        if index >= self.buckets.len() {
            self.buckets.resize_with(index + 1, Vec::new);
        }
        let bucket = &mut self.buckets[index];
        if bucket.capacity() == 0 {
            bucket.reserve(self.hint);
        }
        bucket.push(record);
        self.used = self.used.max(index + 1);
    }

    /// The number of records pushed and not drained.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if no record is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Hands each distinct time's records to `emit`, in increasing time and arrival
    /// order within a time. `emit` may take the vector's contents (e.g. with
    /// `give_container`); whatever it leaves is cleared.
    pub fn drain(&mut self, mut emit: impl FnMut(u64, &mut Vec<D>)) {
        let tick = self.tick.get();
        let mut largest = 0;
        for (index, bucket) in self.buckets[..self.used].iter_mut().enumerate() {
            if !bucket.is_empty() {
                largest = largest.max(bucket.len());
                emit(self.base + index as u64 * tick, bucket);
                bucket.clear();
            }
        }
        self.hint = largest.min(4096);
        self.used = 0;
        if !self.far.is_empty() {
            self.far.sort_by_key(|(t, _)| *t);
            let mut group = Vec::new();
            let mut far = self.far.drain(..).peekable();
            while let Some((t, first)) = far.next() {
                group.push(first);
                while let Some((_, d)) = far.next_if(|(u, _)| *u == t) {
                    group.push(d);
                }
                emit(t, &mut group);
                group.clear();
            }
        }
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Same groups, in the same order, as a stable sort by time.
        #[test]
        fn groups_like_a_stable_sort(
            watermark in 0u64..10_000,
            tick in prop::sample::select(vec![1u64, 7, 100]),
            offsets in prop::collection::vec(prop_oneof![0u64..600, 0u64..10_000_000], 0..300),
        ) {
            let mut groups = ByTime::new(tick);
            groups.begin(watermark);
            // Raw times at or above the watermark; groups are by the rounded time.
            let raw: Vec<(u64, usize)> = offsets.iter().enumerate()
                .map(|(i, o)| (watermark + o, i))
                .collect();
            for &(t, i) in &raw {
                groups.push(t, i);
            }
            let records: Vec<(u64, usize)> = raw.iter().map(|&(t, i)| (t - t % tick, i)).collect();
            prop_assert_eq!(groups.len(), records.len());
            let mut got = Vec::new();
            groups.drain(|t, rs| got.push((t, std::mem::take(rs))));
            let mut sorted = records.clone();
            sorted.sort_by_key(|(t, _)| *t);
            let mut want: Vec<(u64, Vec<usize>)> = Vec::new();
            for (t, i) in sorted {
                match want.last_mut() {
                    Some((u, rs)) if *u == t => rs.push(i),
                    _ => want.push((t, vec![i])),
                }
            }
            prop_assert_eq!(got, want);
            prop_assert!(groups.is_empty());
        }
    }
}
