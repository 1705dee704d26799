//! timely's `-w/-n/-p/-h` for benchmarks that run a dataflow without Kafka.

use std::path::PathBuf;

use clap::Args;

/// Workers and processes, as timely's flags.
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Worker threads per process.
    #[arg(short = 'w', long = "workers", default_value_t = 1)]
    pub workers: usize,
    /// Number of processes.
    #[arg(short = 'n', long = "processes", default_value_t = 1)]
    pub processes: usize,
    /// Index of this process.
    #[arg(short = 'p', long = "process", default_value_t = 0)]
    pub process: usize,
    /// File with one host:port per process.
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    /// Workers in all processes.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }

    /// The timely configuration these flags describe (checked as a job's are).
    pub fn timely_config(&self) -> anyhow::Result<timely::Config> {
        let cluster = freshet::Cluster {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile.clone(),
        };
        Ok(cluster.timely_config()?)
    }

    /// A short label: `w1`, `w2`, `n2w1`.
    pub fn label(&self) -> String {
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
