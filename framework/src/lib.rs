//! Freshet: Kafka stream processing on timely-dataflow.
//!
//! Kafka partitions become timely inputs whose event-time watermarks drive timely's
//! progress tracking; operators from [`freshet_operators`] compute event-time windows
//! and joins; sinks acknowledge durable output, and consumer offsets are committed
//! only for epochs whose output every sink has acknowledged. Start with [`run`] and
//! [`KafkaSource`]; `docs/architecture.md` explains the model and `docs/guide.md` walks
//! through writing, testing and operating a job.
//!
//! Test a job's logic without a broker with [`testing::Harness`]; serve Prometheus
//! metrics with `--metrics-addr` ([`exporter`], [`metrics::PromMetrics`]); bounded runs
//! draw a progress bar on a terminal ([`progress_bar`]).
//!
//! Where things are: a job is built on a [`job::Job`] and run by [`runtime::run`] on a
//! [`cluster::Cluster`], configured by [`config`] types or the [`cli`] flags; records
//! enter through a [`source`], leave through a [`sink`], and are (de)serialised by a
//! [`codec`]; [`commit`] decides which offsets are committed, [`checkpoint`] keeps
//! operator state durable; [`time`] is the timestamp,
//! [`clock`] the wall clock; [`metrics`] counts, [`exporter`] serves them.

#![forbid(missing_docs)]

pub mod checkpoint;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod codec;
pub mod commit;
pub mod config;
pub mod error;
pub mod exporter;
pub mod job;
pub mod metrics;
pub mod progress_bar;
pub mod properties;
pub mod registry;
pub mod runtime;
pub mod schema;
pub mod sink;
pub mod source;
pub mod testing;
pub mod time;

/// The operator library, re-exported.
pub mod operators {
    pub use freshet_operators::*;
}

/// timely-dataflow, re-exported for stream types (`freshet::timely::dataflow::StreamVec`)
/// and its generic operators (`map`, `filter`, `inspect`, ...).
pub use timely;

pub use cli::JobArgs;
pub use cluster::Cluster;
pub use codec::{Bincode, Decoder, Encoder, Json, Upsert, Upserts, WithMeta};
pub use config::{
    KafkaConfig, OutOfRange, PoisonOutput, ProducerSettings, SourceConfig, StartFrom,
};
pub use error::{Error, Result};
pub use freshet_operators::{AssignEventTime, Late, Tumble, Windowed};
pub use job::Job;
pub use metrics::{Metrics, Summary};
pub use runtime::{run, JobConfig};
pub use sink::collect::{Collect, Collected};
pub use sink::dead_letter::WriteDeadLetters;
pub use sink::kafka::{KafkaSink, WriteKafka};
pub use sink::stdout::PrintStdout;
pub use source::{KafkaSource, SourceError, SourceStreams};
pub use time::Time;
