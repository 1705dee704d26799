//! The windowed-aggregation workload: keyed events with bounded disorder, and the
//! hand-written single-threaded loop they are measured against.

use std::collections::HashMap;
use std::hash::BuildHasher;

use rustc_hash::FxBuildHasher;
use serde::{Deserialize, Serialize};

/// One event of the micro-benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedEvent {
    /// Key, `0..keys`.
    pub key: u64,
    /// Value summed per window.
    pub value: u64,
    /// Event time, ms.
    pub ts: u64,
}

/// SplitMix64: a deterministic, stateless hash of `x` (event `i` is generated from
/// `mix(seed ^ i)` alone, so any worker can generate any share of a run).
#[inline]
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// How a run's events are spread over the workers' partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Event `i` goes to partition `i mod peers`: keyless records, every key on every
    /// partition.
    RoundRobin,
    /// Partition `key mod peers`: a keyed topic (Kafka's default partitioner puts all of
    /// a key's records on one partition), each key on one partition. Which worker owns a
    /// key after the exchange is unrelated, as with a real topic.
    ByKey,
}

/// The shape of a generated run.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    /// Number of keys.
    pub keys: u64,
    /// Events per second of event time.
    pub per_second: u64,
    /// Seconds of event time.
    pub seconds: u64,
    /// Each event's time is moved back by up to this many ms.
    pub disorder_ms: u64,
    /// Event time of event 0, ms.
    pub start_ms: u64,
    /// Seed.
    pub seed: u64,
}

impl Workload {
    /// The total number of events.
    pub fn events(&self) -> u64 {
        self.per_second * self.seconds
    }

    /// Event `i` (arrival order `i`).
    #[inline]
    pub fn event(&self, i: u64) -> KeyedEvent {
        let h = mix(self.seed ^ i);
        let base = self.start_ms + i * 1000 / self.per_second;
        let back = (h >> 40) % (self.disorder_ms + 1);
        KeyedEvent {
            key: h % self.keys,
            value: (h >> 20) & 0xff,
            ts: base.saturating_sub(back).max(self.start_ms),
        }
    }

    /// The events worker `index` of `peers` reads, in arrival order, as if each
    /// worker read one partition of a topic split as `split` says.
    pub fn share(&self, index: usize, peers: usize, split: Split) -> Vec<KeyedEvent> {
        match split {
            Split::RoundRobin => (index as u64..self.events())
                .step_by(peers)
                .map(|i| self.event(i))
                .collect(),
            Split::ByKey => (0..self.events())
                .map(|i| self.event(i))
                .filter(|e| e.key % peers as u64 == index as u64)
                .collect(),
        }
    }
}

/// Count and sum per key and window.
pub type CountSum = (u64, u64);

/// Which hasher the reference loop's map uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hasher {
    /// `std::collections::HashMap`'s default (SipHash-1-3): the loop as most people
    /// write it, and as the benchmark's specification names it.
    Std,
    /// `FxHash` (rustc-hash), the hasher Freshet's operators use: a stricter reference.
    Fx,
}

/// The hand-written reference: one `HashMap<(window, key), (count, sum)>` with the
/// given hasher, windows closed (removed and handed to `emit`) once the watermark —
/// largest event time seen minus `out_of_orderness` — passes their end, checked every
/// `round` events, as the dataflow's source does.
pub fn hashmap_loop(
    hasher: Hasher,
    events: &[KeyedEvent],
    window_ms: u64,
    out_of_orderness: u64,
    round: usize,
    emit: impl FnMut(u64, u64, CountSum),
) {
    match hasher {
        Hasher::Std => {
            let open: HashMap<(u64, u64), CountSum> = HashMap::new();
            reference_loop(open, events, window_ms, out_of_orderness, round, emit)
        }
        Hasher::Fx => {
            let open: HashMap<(u64, u64), CountSum, FxBuildHasher> = HashMap::default();
            reference_loop(open, events, window_ms, out_of_orderness, round, emit)
        }
    }
}

fn reference_loop<S: BuildHasher>(
    mut open: HashMap<(u64, u64), CountSum, S>,
    events: &[KeyedEvent],
    window_ms: u64,
    out_of_orderness: u64,
    round: usize,
    mut emit: impl FnMut(u64, u64, CountSum),
) {
    let mut max_seen = 0;
    let mut closed_below = 0;
    for chunk in events.chunks(round.max(1)) {
        for e in chunk {
            max_seen = max_seen.max(e.ts);
            let w = e.ts - e.ts % window_ms;
            let acc = open.entry((w, e.key)).or_insert((0, 0));
            acc.0 += 1;
            acc.1 += e.value;
        }
        let watermark = max_seen.saturating_sub(out_of_orderness);
        let closable = watermark - watermark % window_ms;
        if closable > closed_below {
            closed_below = closable;
            open.retain(|&(w, k), acc| {
                if w + window_ms <= closable {
                    emit(w, k, *acc);
                    false
                } else {
                    true
                }
            });
        }
    }
    for ((w, k), acc) in open.drain() {
        emit(w, k, acc);
    }
}
