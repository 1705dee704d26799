//! Records an operator keeps waiting for *another* input, published so that a job's
//! sources can pause.
//!
//! A stream–table lookup ([`crate::Lookup`]) keeps each stream record until the
//! table's event-time watermark passes it. While the table is read (at every start,
//! from its beginning) or when its watermark stalls, the stream side runs ahead and
//! its records pile up in the lookup. The lookup publishes how many it holds in a
//! [`Backlog`]; the framework's sources other than table sides pause while any
//! backlog of the process is over their bound, and resume when it is back under —
//! the stream side waits in Kafka, not in memory, and the table side keeps being read.
//!
//! The framework creates one [`Backlogs`] per process and installs it on each worker
//! thread while the worker's dataflow is built ([`Backlogs::install`]); operators
//! built meanwhile register with [`register`]. Without an installed registry (plain
//! timely, the operators' own tests) nothing is published and nothing pauses.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// One operator worker's waiting records.
#[derive(Debug)]
pub struct Backlog {
    operator: String,
    waiting: AtomicUsize,
    waits_for: AtomicU64,
}

impl Backlog {
    /// The unique name of the operator, e.g. `Lookup(prices)`.
    pub fn operator(&self) -> &str {
        &self.operator
    }

    /// How many records this operator worker holds waiting.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The event time the waiting records wait for the other input to pass (for the
    /// lookup: the table's watermark now).
    pub fn waits_for(&self) -> u64 {
        self.waits_for.load(Ordering::Relaxed)
    }

    /// Publishes `waiting` records waiting for the other input's watermark to pass
    /// `waits_for`.
    pub fn set(&self, waiting: usize, waits_for: u64) {
        self.waiting.store(waiting, Ordering::Relaxed);
        self.waits_for.store(waits_for, Ordering::Relaxed);
    }
}

/// Every registered [`Backlog`] of a process.
#[derive(Clone, Debug, Default)]
pub struct Backlogs(Arc<Mutex<Vec<Arc<Backlog>>>>);

thread_local! {
    static CURRENT: RefCell<Option<Backlogs>> = const { RefCell::new(None) };
}

/// Uninstalls the registry when dropped.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl Backlogs {
    /// An empty registry.
    pub fn new() -> Self {
        Backlogs::default()
    }

    /// Makes operators built on this thread register here, until the guard is dropped.
    pub fn install(&self) -> Installed {
        CURRENT.with(|c| *c.borrow_mut() = Some(self.clone()));
        Installed(())
    }

    /// How many records every registered backlog holds, together.
    pub fn waiting(&self) -> usize {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().map(|b| b.waiting()).sum()
    }

    /// The registered backlog holding the most records, if it holds more than `bound`.
    pub fn over(&self, bound: usize) -> Option<Arc<Backlog>> {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        list.iter()
            .filter(|b| b.waiting() > bound)
            .max_by_key(|b| b.waiting())
            .cloned()
    }
}

/// Registers a backlog of `operator` in the registry installed on this thread, if any.
pub fn register(operator: &str) -> Option<Arc<Backlog>> {
    CURRENT.with(|c| {
        let current = c.borrow();
        let registry = current.as_ref()?;
        let backlog = Arc::new(Backlog {
            operator: operator.to_string(),
            waiting: AtomicUsize::new(0),
            waits_for: AtomicU64::new(0),
        });
        registry
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(backlog.clone());
        Some(backlog)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_only_while_installed_and_reports_the_largest_over_the_bound() {
        let backlogs = Backlogs::new();
        assert!(register("before").is_none());
        let guard = backlogs.install();
        let a = register("Lookup(a)").unwrap();
        let b = register("Lookup(b)").unwrap();
        drop(guard);
        assert!(register("after").is_none());
        assert!(backlogs.over(10).is_none());
        a.set(11, 5);
        b.set(30, 7);
        let over = backlogs.over(10).unwrap();
        assert_eq!(
            (over.operator(), over.waiting(), over.waits_for()),
            ("Lookup(b)", 30, 7)
        );
        b.set(10, 7);
        assert_eq!(backlogs.over(10).unwrap().operator(), "Lookup(a)");
        a.set(0, 9);
        assert!(backlogs.over(10).is_none());
    }
}
