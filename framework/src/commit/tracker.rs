//! The commit tracker: one per worker, probing every sink's acknowledgements.

use std::cell::RefCell;
use std::rc::Rc;

use timely::dataflow::operators::probe::Handle as ProbeHandle;

use super::Committer;
use crate::error::Result;
use crate::time::Time;

/// The sources' committers of one worker.
type Committers = Rc<RefCell<Vec<Rc<RefCell<dyn Committer>>>>>;

/// Per worker: the probe over all sinks' acknowledgements, and the sources to commit.
#[derive(Clone, Default)]
pub struct CommitTracker {
    probe: ProbeHandle<Time>,
    committers: Committers,
    sinks: Rc<RefCell<usize>>,
    backlogs: Rc<RefCell<Vec<Rc<std::cell::Cell<usize>>>>>,
}

impl CommitTracker {
    /// A tracker with no sinks and no sources yet.
    pub fn new() -> Self {
        CommitTracker::default()
    }

    /// The probe every sink's acknowledgement stream must feed.
    pub fn probe(&self) -> &ProbeHandle<Time> {
        &self.probe
    }

    /// Counts a sink whose acknowledgements were connected to [`CommitTracker::probe`].
    pub fn add_sink(&self) {
        *self.sinks.borrow_mut() += 1;
    }

    /// A counter a sink keeps of the records it holds not yet acknowledged; sources
    /// pause while any sink's is over `SourceConfig::max_sink_backlog`.
    pub fn sink_backlog_counter(&self) -> Rc<std::cell::Cell<usize>> {
        let c = Rc::new(std::cell::Cell::new(0));
        self.backlogs.borrow_mut().push(c.clone());
        c
    }

    /// The largest backlog of this worker's sinks.
    pub fn sink_backlog(&self) -> usize {
        self.backlogs
            .borrow()
            .iter()
            .map(|c| c.get())
            .max()
            .unwrap_or(0)
    }

    /// How many sinks feed the probe.
    pub fn sinks(&self) -> usize {
        *self.sinks.borrow()
    }

    /// Registers a source's committer.
    pub fn add_committer(&self, committer: Rc<RefCell<dyn Committer>>) {
        self.committers.borrow_mut().push(committer);
    }

    /// Epochs below this are complete: the least epoch in the acknowledgement frontier,
    /// or `u64::MAX` once every sink is finished.
    pub fn complete_below(&self) -> u64 {
        self.probe
            .with_frontier(|f| f.iter().map(|t| t.epoch).min().unwrap_or(u64::MAX))
    }

    /// True once every sink has acknowledged everything it will ever receive.
    pub fn done(&self) -> bool {
        self.probe.done()
    }

    /// Asks every source to commit its complete epochs.
    pub fn commit(&self) -> Result<()> {
        self.commit_below(self.complete_below())
    }

    /// Asks every source to commit its epochs below `below` (at most the complete ones).
    pub fn commit_below(&self, below: u64) -> Result<()> {
        let below = below.min(self.complete_below());
        for c in self.committers.borrow().iter() {
            c.borrow_mut().commit_complete(below)?;
        }
        Ok(())
    }
}
