//! Flow control: when a source pauses its partitions, and when it must not.
//!
//! A source pauses while its epoch is more than a bound ahead of the last complete
//! epoch (sinks or operators are slower than Kafka), and resumes when they catch up.
//! But operators that hold state across epochs — a one-minute window holds the epochs
//! of its records until it closes — complete their epochs only when *more input*
//! moves the watermark. Pausing then would wait forever. So while paused the source
//! watches the complete epoch: if it does not move for a stall timeout, the wait is
//! for input, not for sinks; the source raises its bound (at least doubling it, so it
//! soon covers the longest span any operator holds) and resumes.
//!
//! A sink whose backlog (records taken in but not yet acknowledged) is over its bound
//! keeps the source paused whatever the epochs say, and never raises the bound: the
//! backlog shrinks only as the sink's output is delivered (an output broker that is
//! down keeps the job paused, with bounded memory, until it is back).

use std::time::{Duration, Instant};

/// What the source should do with its partitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Stop fetching: too far ahead of what sinks have acknowledged.
    Pause,
    /// Fetch again.
    Resume,
    /// Leave them as they are.
    Keep,
}

/// The pause/resume state of one source worker.
#[derive(Debug)]
pub struct FlowControl {
    configured: u64,
    bound: u64,
    stall: Duration,
    /// Since when paused, and the complete epoch last seen moving while paused.
    paused: Option<(Instant, u64)>,
}

impl FlowControl {
    /// Pauses beyond `max_epochs_ahead`; treats `stall` without progress while paused as
    /// operators waiting for input.
    pub fn new(max_epochs_ahead: u64, stall: Duration) -> Self {
        FlowControl {
            configured: max_epochs_ahead,
            bound: max_epochs_ahead,
            stall,
            paused: None,
        }
    }

    /// The current bound, in epochs.
    pub fn bound(&self) -> u64 {
        self.bound
    }

    /// Decides, given how many epochs the source is `ahead` of the first incomplete
    /// epoch `complete` and whether a sink is `backlogged` (over its bound), at `now`.
    pub fn decide(
        &mut self,
        ahead: u64,
        complete: u64,
        backlogged: bool,
        now: Instant,
    ) -> Decision {
        if backlogged {
            let was_paused = self.paused.is_some();
            self.paused = Some((now, complete));
            return if was_paused {
                Decision::Keep
            } else {
                Decision::Pause
            };
        }
        match self.paused {
            None if ahead > self.bound => {
                self.paused = Some((now, complete));
                Decision::Pause
            }
            None => Decision::Keep,
            Some(_) if ahead <= self.bound => {
                self.paused = None;
                Decision::Resume
            }
            Some((_, seen)) if complete > seen => {
                // Sinks are acknowledging: keep waiting for them.
                self.paused = Some((now, complete));
                Decision::Keep
            }
            Some((since, _)) if now.duration_since(since) >= self.stall => {
                // Nothing completes while the source waits: operators hold epochs that
                // only more input can release. Waiting longer would never end.
                self.bound = (self.bound * 2).max(ahead + self.configured);
                self.paused = None;
                tracing::info!(
                    bound = self.bound,
                    "flow control: raised the bound; operators hold epochs longer than it"
                );
                Decision::Resume
            }
            Some(_) => Decision::Keep,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STALL: Duration = Duration::from_secs(1);

    #[test]
    fn pauses_beyond_the_bound_and_resumes_when_caught_up() {
        let t = Instant::now();
        let mut f = FlowControl::new(10, STALL);
        assert_eq!(f.decide(10, 100, false, t), Decision::Keep);
        assert_eq!(f.decide(11, 100, false, t), Decision::Pause);
        assert_eq!(f.decide(11, 100, false, t), Decision::Keep);
        assert_eq!(f.decide(9, 103, false, t), Decision::Resume);
        assert_eq!(f.bound(), 10);
    }

    #[test]
    fn slow_sinks_keep_it_paused_as_long_as_epochs_complete() {
        let t = Instant::now();
        let mut f = FlowControl::new(10, STALL);
        assert_eq!(f.decide(12, 100, false, t), Decision::Pause);
        // Epochs keep completing, slowly: stay paused well past the stall timeout.
        for i in 1..10u64 {
            let now = t + Duration::from_millis(600 * i);
            assert_eq!(f.decide(12, 100 + i, false, now), Decision::Keep);
        }
        assert_eq!(f.bound(), 10);
    }

    #[test]
    fn a_stall_raises_the_bound_instead_of_waiting_forever() {
        let t = Instant::now();
        let mut f = FlowControl::new(10, STALL);
        assert_eq!(f.decide(11, 100, false, t), Decision::Pause);
        assert_eq!(
            f.decide(11, 100, false, t + Duration::from_millis(500)),
            Decision::Keep
        );
        assert_eq!(f.decide(11, 100, false, t + STALL), Decision::Resume);
        assert_eq!(f.bound(), 21);
        assert_eq!(f.decide(15, 100, false, t + STALL), Decision::Keep);
        // The next stall at least doubles it.
        assert_eq!(f.decide(22, 100, false, t + STALL), Decision::Pause);
        assert_eq!(f.decide(22, 100, false, t + STALL * 2), Decision::Resume);
        assert_eq!(f.bound(), 42);
    }

    #[test]
    fn a_backlogged_sink_keeps_it_paused_and_never_raises_the_bound() {
        let t = Instant::now();
        let mut f = FlowControl::new(10, STALL);
        assert_eq!(f.decide(0, 100, true, t), Decision::Pause);
        // Nothing completes for many stall timeouts (the output broker is down).
        for i in 1..10u32 {
            assert_eq!(f.decide(0, 100, true, t + STALL * i), Decision::Keep);
        }
        assert_eq!(f.bound(), 10);
        assert_eq!(f.decide(0, 100, false, t + STALL * 10), Decision::Resume);
    }
}
