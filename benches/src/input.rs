//! Feeding in-memory records into a dataflow the way a Kafka source would.
//!
//! [`Feeder`] holds one capability at `(W, E)` on a timely unordered input: each round
//! it takes a batch of records in arrival order, raises the watermark `W` to the
//! largest event time seen minus the allowed out-of-orderness, emits the batch grouped
//! by event time with the Kafka source's own [`ByTime`] (one container per distinct
//! time) at `(t, E)`, and downgrades to the new `(W, E)`. The epoch `E` advances every
//! `rounds_per_epoch` rounds.

use freshet::source::ByTime;
use freshet::time::Time;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::vec::UnorderedInput;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::{Scope, StreamVec};

/// A source-like in-memory input.
pub struct Feeder<D: 'static> {
    handle: UnorderedHandle<Time, CapacityContainerBuilder<Vec<D>>>,
    cap: Option<ActivateCapability<Time>>,
    staged: ByTime<D>,
    max_seen: u64,
    out_of_orderness: u64,
    rounds: u64,
    rounds_per_epoch: u64,
    /// Records behind the watermark, clamped up to it (a benchmark input has none
    /// when its disorder is within the out-of-orderness).
    pub late: u64,
}

impl<D: Clone + 'static> Feeder<D> {
    /// A new input in `scope`, with its stream.
    pub fn new<'s>(
        scope: &Scope<'s, Time>,
        out_of_orderness: u64,
        rounds_per_epoch: u64,
    ) -> (Self, StreamVec<'s, Time, D>) {
        let ((handle, cap), stream) = scope.new_unordered_input();
        (
            Feeder {
                handle,
                cap: Some(cap),
                staged: ByTime::new(1),
                max_seen: 0,
                out_of_orderness,
                rounds: 0,
                rounds_per_epoch: rounds_per_epoch.max(1),
                late: 0,
            },
            stream,
        )
    }

    /// Rounds each record's timestamp down to a multiple of `tick` ms, as the Kafka
    /// source's `SourceConfig::tick_ms` does (fewer distinct times, bigger batches).
    pub fn tick(mut self, tick: u64) -> Self {
        self.staged = ByTime::new(tick);
        self
    }

    /// The current `(watermark, epoch)`.
    pub fn time(&self) -> Option<Time> {
        self.cap.as_ref().map(|c| *c.time())
    }

    /// Sends one round: `(event time, record)` in arrival order.
    pub fn round(&mut self, batch: impl IntoIterator<Item = (u64, D)>) {
        let Some(cap) = self.cap.as_mut() else { return };
        let now = *cap.time();
        // A time rounded down to the tick is below the watermark exactly when the raw
        // time is below the watermark rounded up: one comparison per record, and the
        // rounding is left to `ByTime::push`. Late records are clamped up to it.
        let tick = self.staged.tick();
        let floor = now.event.div_ceil(tick) * tick;
        self.staged.begin(now.event);
        let mut max_seen = self.max_seen;
        for (t, d) in batch {
            max_seen = max_seen.max(t);
            if t < floor {
                self.late += 1;
                self.staged.push(floor, d);
            } else {
                self.staged.push(t, d);
            }
        }
        self.max_seen = self.staged.round(max_seen);
        let mut handle = self.handle.activate();
        self.staged.drain(|t, records| {
            let at = cap.delayed(&Time {
                event: t,
                epoch: now.epoch,
            });
            handle.session(&at).give_container(records);
        });
        self.rounds += 1;
        let next = Time {
            event: now
                .event
                .max(self.max_seen.saturating_sub(self.out_of_orderness)),
            epoch: self.rounds / self.rounds_per_epoch,
        };
        cap.downgrade(&next);
    }

    /// Moves the watermark to `event` (never backwards) without sending anything.
    pub fn advance_to(&mut self, event: u64) {
        if let Some(cap) = self.cap.as_mut() {
            let now = *cap.time();
            if event > now.event {
                cap.downgrade(&Time {
                    event,
                    epoch: now.epoch,
                });
            }
        }
    }

    /// Ends the input: the frontier empties and every window flushes.
    pub fn close(&mut self) {
        self.cap = None;
    }
}
