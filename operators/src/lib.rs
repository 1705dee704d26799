//! Freshet's operator library: event-time windows, aggregations and joins.
//!
//! Every operator here is generic over an [`EventTime`] timestamp and follows one
//! rule: while it holds state derived from an input at `(t, e)`, it holds a capability
//! at or below `(·, e)` for the output that state will produce. Users reach these
//! through the `freshet` crate, which re-exports them.
//!
//! | family | extension trait | module |
//! | --- | --- | --- |
//! | tumbling windows | [`Tumble`] | [`tumble`] |
//! | sliding windows | [`Slide`] | [`slide`] |
//! | session windows | [`Session`] | [`session`] |
//! | aggregators (count, sum, min, max, mean, top-k, whole window, user) | [`aggregate::Aggregator`] | [`aggregate`] |
//! | window join | [`WindowJoin`] | [`join`] |
//! | interval join | [`IntervalJoin`] | [`interval_join`] |
//! | stream–table (as-of) join | [`Lookup`] | [`lookup`] |
//! | keyed state machines with TTL | [`KeyedState`] | [`keyed_state`] |
//! | rolling (OVER) windows: an aggregate per record over the range ending at it | [`Rolling`] | [`rolling`] |
//! | event time from records | [`AssignEventTime`] | [`assign`] |
//! | in-memory test input at explicit times, any number of workers | [`scripted::ScriptedInput`] | [`scripted`] |
//! | streams a job leaves unconnected (late, errors, too late, overflow), found at build | [`unconnected::Watch`] | [`unconnected`] |
//! | records an operator keeps waiting for another input, for the sources' flow control | [`backlog::Backlogs`] | [`backlog`] |
//!
//! Window results are upserts keyed by `(key, start, end)` ([`Windowed`], [`Emit`]);
//! late records arrive as [`Late`] on a second input. `docs/operators.md` is the
//! reference: semantics, capabilities held, emission times, lateness, output types.

#![forbid(missing_docs)]

pub mod aggregate;
pub mod assign;
pub mod backlog;
mod capability;
pub mod checkpoint;
mod fixed;
pub mod hash;
mod held_epochs;
pub mod interval_join;
pub mod join;
pub mod keyed_state;
pub mod late;
pub mod lookup;
mod preagg;
pub mod rolling;
pub mod scripted;
pub mod session;
pub mod slide;
pub mod time;
pub mod tumble;
pub mod unconnected;
pub mod window;

pub use assign::AssignEventTime;
pub use interval_join::IntervalJoin;
pub use join::{JoinKind, JoinOverflow, JoinStreams, WindowJoin};
pub use keyed_state::KeyedState;
pub use late::Late;
pub use lookup::Lookup;
pub use rolling::{Rolled, Rolling, RollingMode, RollingPolicy, RollingStreams};
pub use session::Session;
pub use slide::Slide;
pub use time::{event_frontier, EventTime, Time, TimeSummary};
pub use tumble::Tumble;
pub use window::{Emit, WindowPolicy, WindowStreams, Windowed};
