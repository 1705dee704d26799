//! The workers and processes a job runs on: timely's `-w -n -p -h`.

use std::path::PathBuf;

use crate::error::{Error, Result};

/// How many workers and processes, as timely's `-w -n -p -h`.
#[derive(Clone, Debug)]
pub struct Cluster {
    /// Worker threads per process.
    pub workers: usize,
    /// Number of processes.
    pub processes: usize,
    /// This process's index among them.
    pub process: usize,
    /// File with one `host:port` per process (default `localhost:2101+i`).
    pub hostfile: Option<PathBuf>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            workers: 1,
            processes: 1,
            process: 0,
            hostfile: None,
        }
    }
}

impl Cluster {
    /// The timely configuration for these workers and processes, checked: at least one
    /// worker and one process, and `process` one of them.
    pub fn timely_config(&self) -> Result<timely::Config> {
        if self.workers == 0 || self.processes == 0 {
            return Err(Error::Config("-w and -n must be at least 1".into()));
        }
        if self.process >= self.processes {
            return Err(Error::Config(format!(
                "-p {} is out of range for -n {} (processes are numbered from 0)",
                self.process, self.processes
            )));
        }
        let mut args = vec![
            "-w".to_string(),
            self.workers.to_string(),
            "-n".to_string(),
            self.processes.to_string(),
            "-p".to_string(),
            self.process.to_string(),
        ];
        if let Some(h) = &self.hostfile {
            args.push("-h".into());
            args.push(h.display().to_string());
        }
        timely::Config::from_args(args.into_iter()).map_err(Error::Config)
    }
}
