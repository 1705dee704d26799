//! Streams a job should not leave unconnected by mistake: a source's error and late
//! streams, a window's, session's or rolling window's records too late for its
//! lateness, a capped window join's overflow.
//!
//! Operators *declare* such a stream as they build it ([`declare`]); a [`Watch`],
//! started before a dataflow's operators are built and finished after, learns from
//! timely which operator outputs something consumes — timely logs one `Channels` event
//! (source operator and port, target operator and port) per channel, as the channel is
//! connected — and names each declared stream no channel starts from ([`Unconnected`]).
//! The framework logs one warning line per such stream when a job starts.
//!
//! The watch's logger is in the worker's log registry only while the operators are
//! built (between [`Watch::start`] and [`Watch::finish`], both called inside the
//! dataflow's build closure): the dataflow's subgraph and its operators' scheduling
//! are set up after that closure returns and never see it. The channels connected
//! meanwhile keep a handle to it and log each message they send and receive; after
//! the build the logger throws those events away unread (`docs/decisions.md` has the
//! measured cost).

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, Instant};

use timely::dataflow::Stream;
use timely::logging::{TimelyEvent, TimelyEventBuilder};
use timely::logging_core::Logger;
use timely::progress::Timestamp;
use timely::worker::Worker;

/// A declared stream that no operator consumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unconnected {
    /// The unique name of the operator (or source) the stream is an output of, e.g.
    /// `KafkaSource(payments)` or `Tumble(counts, 1000ms)`.
    pub operator: String,
    /// The stream's name: `errors`, `late`, `too_late` or `overflow`.
    pub stream: &'static str,
    /// What its records are.
    pub holds: &'static str,
}

impl fmt::Display for Unconnected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: its `{}` stream ({}) is connected to nothing: those records are counted \
             and dropped",
            self.operator, self.stream, self.holds
        )
    }
}

/// A declared stream: where it starts, and what to say if nothing consumes it.
struct Declared {
    /// The address of the scope the stream is in.
    scope: Vec<usize>,
    /// Its source: operator index in the scope, output port.
    source: (usize, usize),
    stream: Unconnected,
}

thread_local! {
    /// The streams declared while a [`Watch`] is open on this thread.
    static DECLARED: RefCell<Option<Vec<Declared>>> = const { RefCell::new(None) };
}

/// Declares `stream`, an output of `operator` named `name` holding `holds`, as one a
/// job should connect. Does nothing unless a [`Watch`] is open on this thread.
pub fn declare<T: Timestamp, C>(
    stream: &Stream<'_, T, C>,
    operator: &str,
    name: &'static str,
    holds: &'static str,
) {
    DECLARED.with(|d| {
        if let Some(list) = d.borrow_mut().as_mut() {
            let source = stream.name();
            list.push(Declared {
                scope: stream.scope().addr().to_vec(),
                source: (source.node, source.port),
                stream: Unconnected {
                    operator: operator.to_string(),
                    stream: name,
                    holds,
                },
            });
        }
    });
}

/// The name timely looks its own logger up by.
const TIMELY: &str = "timely";

/// Channel sources seen: `(scope address, (operator index, output port))`.
type Seen = Rc<RefCell<HashSet<(Vec<usize>, (usize, usize))>>>;

/// Watches the build of one dataflow for declared streams nothing consumes.
pub struct Watch {
    seen: Seen,
    live: Rc<Cell<bool>>,
    logger: Option<Logger<TimelyEventBuilder>>,
}

impl Watch {
    /// Starts watching the operators built on `worker` from now on (call it first
    /// thing in the dataflow's build closure). If the worker has no log registry, or
    /// already has a `timely` logger, the watch hears nothing and finds nothing.
    pub fn start(worker: &Worker) -> Watch {
        let seen: Seen = Rc::default();
        let live = Rc::new(Cell::new(true));
        let mut logger = None;
        if let Some(mut registry) = worker.log_register() {
            if !registry.names().any(|n| n == TIMELY) {
                let (s, l) = (seen.clone(), live.clone());
                let action =
                    move |_: &Duration, events: &mut Option<Vec<(Duration, TimelyEvent)>>| {
                        let Some(events) = events else { return };
                        if l.get() {
                            for (_, event) in events.iter() {
                                if let TimelyEvent::Channels(c) = event {
                                    s.borrow_mut().insert((c.scope_addr.clone(), c.source));
                                }
                            }
                        }
                        events.clear();
                    };
                let new = Logger::<TimelyEventBuilder>::new(Instant::now(), Duration::ZERO, action);
                registry.insert_logger(TIMELY, new.clone());
                logger = Some(new);
            }
        }
        DECLARED.with(|d| *d.borrow_mut() = Some(Vec::new()));
        Watch { seen, live, logger }
    }

    /// Stops watching (call it last thing in the build closure): removes the logger
    /// and returns the declared streams no operator consumes, in declaration order.
    pub fn finish(self, worker: &Worker) -> Vec<Unconnected> {
        let declared = DECLARED.with(|d| d.borrow_mut().take()).unwrap_or_default();
        let Some(logger) = self.logger else {
            return Vec::new();
        };
        if let Some(mut registry) = worker.log_register() {
            registry.remove(TIMELY);
        }
        logger.flush();
        self.live.set(false);
        let seen = self.seen.borrow();
        declared
            .into_iter()
            .filter(|d| !seen.contains(&(d.scope.clone(), d.source)))
            .map(|d| d.stream)
            .collect()
    }
}
