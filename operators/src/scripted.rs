//! Scripted inputs at explicit `Time`s: testing a dataflow in memory at any number of
//! workers.
//!
//! timely's ordinary `Input` moves one time forward at a time and cannot take a
//! product-ordered timestamp such as [`Time`] with records at several event times in
//! one epoch. A [`ScriptedInput`] can: each worker sends records at any `(event,
//! epoch)` at or above what it promised, then promises no more below a time with
//! [`ScriptedInput::advance`], exactly as a Kafka source does with its watermark and
//! epoch. Run it inside `timely::execute` with `Config::process(n)` to test at `n`
//! workers; each worker feeds its own share, as each source worker reads its own
//! partitions.

use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::core::unordered_input::UnorderedHandle;
use timely::dataflow::operators::vec::UnorderedInput;
use timely::dataflow::operators::ActivateCapability;
use timely::dataflow::{Scope, StreamVec};

use crate::time::Time;

/// A scripted input on one worker: records at explicit times, and promises about
/// which times are done.
///
/// # Examples
///
/// A tumbling count at two workers, each worker sending half of the records:
/// ```
/// use std::sync::{Arc, Mutex};
/// use freshet_operators::scripted::ScriptedInput;
/// use freshet_operators::{Time, Tumble};
/// use timely::dataflow::operators::Inspect;
///
/// let results = Arc::new(Mutex::new(Vec::new()));
/// let shared = results.clone();
/// timely::execute(timely::Config::process(2), move |worker| {
///     let index = worker.index() as u64;
///     let shared = shared.clone();
///     let mut input = worker.dataflow::<Time, _, _>(|scope| {
///         let (input, stream) = ScriptedInput::new(&scope);
///         stream
///             .tumble_count("clicks", 10, |user: &u8| *user)
///             .inspect(move |w| shared.lock().unwrap().push((w.key, w.start, w.value)));
///         input
///     });
///     // Worker 0 sends event times 0 and 2, worker 1 sends 1 and 3, all in epoch 0.
///     input.send(Time::new(index, 0), 7u8);
///     input.send(Time::new(index + 2, 0), 7u8);
///     // The watermark moves to 10 in epoch 1: window [0, 10) closes.
///     input.advance(Time::new(10, 1));
///     input.close();
/// })
/// .unwrap();
/// assert_eq!(results.lock().unwrap().clone(), vec![(7, 0, 4)]);
/// ```
pub struct ScriptedInput<D: 'static> {
    handle: UnorderedHandle<Time, CapacityContainerBuilder<Vec<D>>>,
    cap: Option<ActivateCapability<Time>>,
}

impl<D: Clone + 'static> ScriptedInput<D> {
    /// A new input in `scope`, at `(0, 0)`, and its stream.
    pub fn new<'s>(scope: &Scope<'s, Time>) -> (Self, StreamVec<'s, Time, D>) {
        let ((handle, cap), stream) = scope.new_unordered_input();
        let input = ScriptedInput {
            handle,
            cap: Some(cap),
        };
        (input, stream)
    }

    /// Sends `record` at `time`.
    ///
    /// # Panics
    /// If `time` is not at or above the last time passed to [`advance`](Self::advance),
    /// or the input is closed.
    pub fn send(&mut self, time: Time, record: D) {
        let cap = self.cap.as_ref().expect("scripted input is closed");
        let at = cap.delayed(&time);
        self.handle.activate().session(&at).give(record);
    }

    /// Promises no more records at times not at or above `time` (the source's
    /// watermark and epoch).
    pub fn advance(&mut self, time: Time) {
        if let Some(cap) = self.cap.as_mut() {
            cap.downgrade(&time);
        }
    }

    /// Ends the input: no more records at all.
    pub fn close(&mut self) {
        self.cap = None;
    }
}
