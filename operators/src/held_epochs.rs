//! Capabilities held for long-lived state, one per epoch, at the watermark.
//!
//! Windows know when their output is due (`end - 1`) and hold a capability there.
//! State whose output can come at any later time (a kept join record, a keyed state)
//! only needs its epoch held back: [`HeldEpochs`] counts, per distinct "epoch" (the time
//! with event coordinate 0) among live state, how much state is owed, and holds one
//! capability per such epoch at `(watermark, e)` (or at the batch's own time, while
//! that is ahead of the watermark), moved up as the watermark moves.
//! Commits wait for the state; downstream event time does not.

use std::collections::BTreeMap;

use timely::dataflow::operators::{Capability, CapabilitySet};
use timely::progress::Antichain;

use crate::capability::Mint;
use crate::checkpoint::{lift_epochs, lift_time};
use crate::time::EventTime;

/// Live state per epoch, and the capabilities held for it.
pub(crate) struct HeldEpochs<T: EventTime> {
    owed: BTreeMap<T, usize>,
    held: CapabilitySet<T>,
}

impl<T: EventTime> HeldEpochs<T> {
    /// Nothing owed.
    pub(crate) fn new() -> Self {
        HeldEpochs {
            owed: BTreeMap::new(),
            held: CapabilitySet::new(),
        }
    }

    /// Owes one more piece of state derived from `time`, covered by `cap` (a message's
    /// input capability, for output `port`, or a capability held).
    pub(crate) fn owe(&mut self, time: &T, cap: &impl Mint<T>, port: usize) {
        if !self.held.iter().any(|c| c.time().less_equal(time)) {
            self.held.insert(cap.mint(time, port));
        }
        *self.owed.entry(time.with_event(0)).or_default() += 1;
    }

    /// One piece of state derived from `time` is gone.
    pub(crate) fn pay(&mut self, time: &T) {
        let at = time.with_event(0);
        let count = self.owed.get_mut(&at).expect("paid only what is owed");
        *count -= 1;
        if *count == 0 {
            self.owed.remove(&at);
        }
    }

    /// A capability at `time`, which must be at or above the watermark last settled
    /// at, for an epoch still owed.
    pub(crate) fn delayed(&self, time: &T) -> Capability<T> {
        self.held.delayed(time)
    }

    /// State of epochs `<= epoch` is in the checkpoint of `epoch`: what is owed for it
    /// is owed at `epoch + 1` from now on (see [`crate::checkpoint::lift_time`]; the
    /// caller lifts the times it will [`HeldEpochs::pay`] with alike), and the
    /// capabilities held for it move there.
    pub(crate) fn lift(&mut self, epoch: u64) {
        if self.owed.keys().any(|t| t.epoch() <= epoch) {
            for (t, n) in std::mem::take(&mut self.owed) {
                *self.owed.entry(lift_time(t, epoch)).or_default() += n;
            }
        }
        lift_epochs(&mut self.held, epoch);
    }

    /// Moves each held capability up to the watermark (a capability minted for a
    /// batch ahead of the watermark stays where it is) and drops those no owed epoch
    /// needs any more.
    pub(crate) fn settle(&mut self, watermark: u64) {
        let mut times = Antichain::new();
        for cap in self.held.iter() {
            let time = cap.time();
            let epoch = time.with_event(0);
            if self.owed.keys().any(|owed| epoch.less_equal(owed)) {
                times.insert(time.with_event(time.event().max(watermark)));
            }
        }
        let moved = times.len() != self.held.len()
            || self
                .held
                .iter()
                .any(|c| !times.elements().contains(c.time()));
        if moved {
            self.held.downgrade(times.iter());
        }
    }
}
