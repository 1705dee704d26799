//! timely's `-w/-n/-p/-h` for benchmarks that run a dataflow without Kafka: the
//! framework's own [`ClusterArgs`], and a short label for result lines.

pub use freshet::cli::ClusterArgs;

/// A short label of a cluster for result lines: `w1`, `w2`, `n2w1`.
pub trait Label {
    /// The label.
    fn label(&self) -> String;
}

impl Label for ClusterArgs {
    fn label(&self) -> String {
        if self.processes == 1 {
            format!("w{}", self.workers)
        } else {
            format!("n{}w{}", self.processes, self.workers)
        }
    }
}

/// One step of a worker waiting on a frontier. Across processes the worker parks while
/// idle: two spinning workers on two cores starved timely's network threads (2-process
/// runs were up to 2× slower). In one process spinning is a little faster: there are no
/// network threads to starve, and a parked worker wakes late.
pub fn wait_step(worker: &mut timely::worker::Worker, multi_process: bool) {
    if multi_process {
        worker.step_or_park(Some(std::time::Duration::from_millis(1)));
    } else {
        worker.step();
    }
}
