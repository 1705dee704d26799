//! Moving records to the event time they carry.

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use crate::capability::time_of;
use crate::time::EventTime;

/// Extension trait: re-timestamp records by an event time read from each record.
pub trait AssignEventTime<'scope, T: EventTime, D> {
    /// Moves each record to `time.with_event(event(record))`, its own event time with
    /// the other coordinates kept. A record whose event time is below its current time's
    /// event coordinate (time cannot move backwards) stays at its current time.
    ///
    /// Records are grouped by their new time before they are sent: one output session
    /// per distinct time in a batch.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Capture, ToStream};
    /// use timely::dataflow::operators::capture::Extract;
    /// use freshet_operators::AssignEventTime;
    ///
    /// let out = timely::example(|scope| {
    ///     vec![("a", 30u64), ("b", 10)].to_stream(scope)
    ///         .assign_event_time("at", |r: &(&str, u64)| r.1)
    ///         .capture()
    /// });
    /// let mut got = out.extract();
    /// got.sort();
    /// assert_eq!(got, vec![(10, vec![("b", 10)]), (30, vec![("a", 30)])]);
    /// ```
    fn assign_event_time<F>(self, name: &str, event: F) -> StreamVec<'scope, T, D>
    where
        F: Fn(&D) -> u64 + 'static;
}

impl<'scope, T: EventTime, D: Clone + 'static> AssignEventTime<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn assign_event_time<F>(self, name: &str, event: F) -> StreamVec<'scope, T, D>
    where
        F: Fn(&D) -> u64 + 'static,
    {
        let mut staged: Vec<(u64, D)> = Vec::new();
        self.unary(
            Pipeline,
            &format!("AssignEventTime({name})"),
            move |_cap, _info| {
                move |input, output| {
                    input.for_each_stamp(|cap, batches| {
                        let Some(time) = time_of(&cap) else {
                            return;
                        };
                        for batch in batches {
                            staged
                                .extend(batch.drain(..).map(|d| (event(&d).max(time.event()), d)));
                        }
                        staged.sort_unstable_by_key(|(t, _)| *t);
                        let mut sorted = staged.drain(..).peekable();
                        while let Some((t, first)) = sorted.next() {
                            let at = cap.delayed(&time.with_event(t), 0);
                            let mut session = output.session(&at);
                            session.give(first);
                            while let Some((_, d)) = sorted.next_if(|(u, _)| *u == t) {
                                session.give(d);
                            }
                        }
                    });
                }
            },
        )
    }
}
