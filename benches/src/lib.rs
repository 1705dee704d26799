//! Freshet's benchmark suite: a deterministic Nexmark generator and the Nexmark
//! queries written with the public Freshet API, the windowed-aggregation workload, and
//! what every benchmark binary shares (cluster flags, in-memory input, peak RSS,
//! result lines). The binaries are in `src/bin/`; `scripts/bench` runs them all and
//! writes `docs/benchmarks.md`.

#![forbid(missing_docs)]

pub mod checkpoints;
pub mod cluster;
pub mod input;
pub mod kafka;
pub mod nexmark;
pub mod report;
pub mod windowed;
