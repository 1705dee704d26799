//! Capability helpers every operator shares: the time of a message, holding and
//! moving capabilities for windows, the capability a result is emitted at, records
//! waiting for the frontier, and the event-time watermark over an operator's inputs.

use timely::dataflow::operators::{Capability, CapabilitySet, InputCapability};
use timely::progress::frontier::MutableAntichain;

use crate::time::{event_frontier, EventTime};

/// An operator output of `Vec<D>` containers, as `OperatorBuilder` operators use.
pub(crate) type VecOutput<T, D> = timely::dataflow::operators::generic::OutputBuilder<
    T,
    timely::container::CapacityContainerBuilder<Vec<D>>,
>;

/// The time of a message: Freshet operators and sources send each message under one
/// time, the first (and only) element of its stamp.
#[inline]
pub(crate) fn time_of<T: EventTime>(cap: &InputCapability<T>) -> Option<T> {
    cap.stamp().iter().next().copied()
}

/// Records waiting, with their message's capability, for a frontier to pass their time;
/// ordered by event time, then time.
pub(crate) type Waiting<T, D> = std::collections::BTreeMap<(u64, T), (Capability<T>, Vec<D>)>;

/// Adds a message's records to `waiting` under its time (Freshet operators and sources
/// send each message under one time), keeping one capability per time.
pub(crate) fn stash<'a, T: EventTime, D: 'a>(
    waiting: &mut Waiting<T, D>,
    cap: InputCapability<T>,
    batches: impl Iterator<Item = &'a mut Vec<D>>,
) {
    let Some(time) = time_of(&cap) else {
        return;
    };
    let (_, records) = waiting
        .entry((time.event(), time))
        .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
    for batch in batches {
        records.append(batch);
    }
}

/// Adds batches that waited elsewhere (a checkpoint's stash, a restored part), each
/// with its capability, to `waiting` under the capability's time.
pub(crate) fn keep<T: EventTime, D>(
    waiting: &mut Waiting<T, D>,
    batches: impl IntoIterator<Item = (Capability<T>, Vec<D>)>,
) {
    for (cap, mut records) in batches {
        let time = *cap.time();
        waiting
            .entry((time.event(), time))
            .or_insert_with(|| (cap, Vec::new()))
            .1
            .append(&mut records);
    }
}

/// The event-time watermark over all of an operator's inputs.
#[inline]
pub(crate) fn watermark<T: EventTime>(frontiers: &[MutableAntichain<T>]) -> u64 {
    frontiers
        .iter()
        .map(|f| event_frontier(&f.frontier()))
        .min()
        .unwrap_or(u64::MAX)
}

/// Holds a capability for output `port` at `time` in `caps`, unless one at or below it
/// is already held (the common case: no capability work).
#[inline]
pub(crate) fn hold<T: EventTime>(
    caps: &mut CapabilitySet<T>,
    cap: &impl Mint<T>,
    time: T,
    port: usize,
) {
    if !caps.iter().any(|c| c.time().less_equal(&time)) {
        caps.insert(cap.mint(&time, port));
    }
}

/// What capabilities for later times are minted from: a message's input capability
/// (for any output `port`), or a capability already held (for its own output: `port`
/// is not consulted).
pub(crate) trait Mint<T: EventTime> {
    /// A capability at `time`, at or after this one's, for output `port`.
    fn mint(&self, time: &T, port: usize) -> Capability<T>;
}

impl<T: EventTime> Mint<T> for InputCapability<T> {
    #[inline]
    fn mint(&self, time: &T, port: usize) -> Capability<T> {
        self.delayed(time, port)
    }
}

impl<T: EventTime> Mint<T> for Capability<T> {
    #[inline]
    fn mint(&self, time: &T, _port: usize) -> Capability<T> {
        self.delayed(time)
    }
}

/// Moves every capability in `caps` up to event time `event` (none is above it), so a
/// window whose end moved later (a growing session) holds its epochs there and no
/// longer holds back event time below it.
pub(crate) fn advance_caps<T: EventTime>(caps: &mut CapabilitySet<T>, event: u64) {
    if caps.iter().any(|c| c.time().event() < event) {
        let mut times = timely::progress::Antichain::new();
        for c in caps.iter() {
            times.insert(c.time().with_event(event));
        }
        caps.downgrade(times.iter());
    }
}

/// The capability to emit a result owed under `caps`, at event time `event` (or the
/// greatest event time among them, if later) and the meet of their other coordinates
/// (for [`crate::Time`], the least epoch): at or below `(·, e)` for every epoch `e`
/// whose records the result covers.
pub(crate) fn emission_cap<T: EventTime>(
    caps: &CapabilitySet<T>,
    event: u64,
) -> Option<Capability<T>> {
    let event = caps.iter().map(|c| c.time().event()).fold(event, u64::max);
    let time = caps
        .iter()
        .map(|c| c.time().with_event(event))
        .reduce(|a, b| a.meet(&b))?;
    match caps.try_delayed(&time) {
        Some(cap) => Some(cap),
        None => caps.first().cloned(),
    }
}
