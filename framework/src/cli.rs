//! Command-line arguments every Freshet job binary shares (clap).
//!
//! Flatten [`JobArgs`] into a binary's own `clap::Parser` and call
//! [`JobArgs::into_config`]. timely's `-w/-n/-p/-h` are here too, so the help flag
//! is `--help` only (`-h` is timely's hostfile).

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::checkpoint::CheckpointConfig;
use crate::cluster::Cluster;
use crate::config::{
    parse_setting, Fallback, KafkaConfig, OutOfRange, PoisonOutput, Setting, SourceConfig,
    StartFrom,
};
use crate::error::Result;
use crate::runtime::JobConfig;

/// Kafka, source and cluster settings of a job. Every default is the config types'
/// own ([`KafkaConfig`], [`SourceConfig`], [`JobConfig`], [`Cluster`]).
#[derive(Args, Clone, Debug)]
pub struct JobArgs {
    /// Kafka bootstrap servers.
    #[arg(long, env = "FRESHET_BROKERS", default_value_t = KafkaConfig::default().brokers)]
    pub brokers: String,
    /// Consumer group that offsets are committed to.
    #[arg(long, default_value_t = KafkaConfig::default().group)]
    pub group: String,
    /// Where to start reading: the group's committed offsets, or earliest/latest.
    #[arg(long, value_enum, default_value_t = source().start)]
    pub from: StartFrom,
    /// With --from committed: where partitions without a committed offset start.
    #[arg(long, value_enum, default_value_t = source().fallback)]
    pub fallback: Fallback,
    /// Read each partition to its current end, flush every window, commit, exit.
    #[arg(long)]
    pub bounded: bool,
    /// Kafka client settings from a Java-style client.properties file (TLS, SASL, ...);
    /// values may be ${ENV_VAR} references. -X settings override it.
    #[arg(long, value_name = "FILE", env = "FRESHET_KAFKA_CONFIG")]
    pub kafka_config: Option<PathBuf>,
    /// Raw librdkafka setting, repeatable: -X fetch.min.bytes=1024 (visible in the
    /// process list: put secrets in --kafka-config).
    #[arg(short = 'X', value_name = "KEY=VALUE", value_parser = parse_setting)]
    pub extra: Vec<Setting>,
    /// Epoch length in ms (offset commits are aligned to epochs).
    #[arg(long, default_value_t = ms(source().epoch_interval))]
    pub epoch_ms: u64,
    /// Bounded out-of-orderness of event times, ms.
    #[arg(long, default_value_t = ms(source().out_of_orderness))]
    pub out_of_orderness_ms: u64,
    /// A partition at its end and quiet this long stops holding the watermark, ms.
    #[arg(long, default_value_t = ms(source().idle_timeout))]
    pub idle_timeout_ms: u64,
    /// When every partition of a worker is idle, advance its watermark with the wall
    /// clock (for streams whose event time tracks the clock); by default it holds.
    #[arg(long)]
    pub idle_advance: bool,
    /// Records dated more than this far past the wall clock go to the error stream, ms.
    #[arg(long, default_value_t = ms(source().max_future))]
    pub max_future_ms: u64,
    /// A committed offset out of range: fail the job, or restart at --fallback.
    #[arg(long, value_enum, default_value_t = source().on_out_of_range)]
    pub on_out_of_range: OutOfRange,
    /// Write malformed, late and refused records here, with their provenance in headers.
    #[arg(long, value_name = "TOPIC")]
    pub dead_letter_topic: Option<String>,
    /// A record the producer refuses for good: fail the job, or write it to the
    /// dead-letter topic.
    #[arg(long, value_enum, default_value_t = JobConfig::default().poison_output)]
    pub poison_output: PoisonOutput,
    /// Do not look for side streams the job leaves unconnected at start (the check's
    /// logger costs a little per message for the life of the job).
    #[arg(long)]
    pub no_unconnected_check: bool,
    /// Pause reading while a sink holds more than this many unacknowledged records.
    #[arg(long, default_value_t = source().max_sink_backlog)]
    pub max_sink_backlog: usize,
    /// Pause reading (except table sides) while a stream–table lookup holds more than
    /// this many stream records waiting for its table.
    #[arg(long, default_value_t = source().max_lookup_backlog)]
    pub max_lookup_backlog: usize,
    /// Pause reading when this many epochs ahead of the last complete epoch.
    #[arg(long, default_value_t = source().max_epochs_ahead)]
    pub max_epochs_ahead: u64,
    /// Most messages a source reads per activation (like max.poll.records).
    #[arg(long, default_value_t = source().batch_size)]
    pub batch_size: usize,
    /// Workers and processes (timely's -w/-n/-p/-h).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Serve Prometheus metrics at http://ADDR/metrics, e.g. 127.0.0.1:9898 (process p
    /// of a multi-process job adds p to the port).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log a one-line status this often, seconds (0: never).
    #[arg(long, default_value_t = JobConfig::default().status_every.as_secs())]
    pub status_secs: u64,
    /// Do not draw the progress bar of bounded runs (it is drawn only on a terminal).
    #[arg(long)]
    pub no_progress: bool,
    /// Checkpoints (durable state): where, how often, how many, or off.
    #[command(flatten)]
    pub checkpoints: CheckpointArgs,
}

/// Checkpoint flags: durable operator state, restored at the next start.
#[derive(Args, Clone, Debug)]
pub struct CheckpointArgs {
    /// Keep state in memory only: no checkpoints, and offsets are committed only once
    /// every window holding a record has closed (commits wait for the longest window,
    /// and a restart replays every open window from Kafka).
    #[arg(long)]
    pub no_checkpoints: bool,
    /// Where checkpoints are kept: a directory, or s3://BUCKET/PREFIX (an object store
    /// over the S3 protocol; connection from AWS_ENDPOINT_URL, AWS_REGION,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP)
    /// [default: .freshet/checkpoints/<group>].
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Take a checkpoint this often, ms (rounded up to whole epochs).
    #[arg(long, default_value_t = ms(CheckpointConfig::default().interval))]
    pub checkpoint_interval_ms: u64,
    /// Keep this many complete checkpoints; older ones are deleted.
    #[arg(long, default_value_t = CheckpointConfig::default().retain)]
    pub checkpoint_retain: usize,
    /// Each stateful operator's part holds what changed; every this many parts a
    /// thread beside the worker compacts the chain into a full image, so a restore
    /// reads an image and at most twice this many parts (1: the whole state every
    /// time).
    #[arg(long, default_value_t = CheckpointConfig::default().full_every)]
    pub checkpoint_full_every: u64,
    /// Restore even if the checkpoint holds state of operators this job no longer has
    /// (that state is dropped; without the flag such a start is refused).
    #[arg(long)]
    pub drop_orphaned_state: bool,
    /// Write every result to Kafka exactly once across crashes: results wait until
    /// their checkpoint is complete (output latency: about one checkpoint interval),
    /// and a restarted job skips what it finds already written.
    #[arg(long)]
    pub exactly_once: bool,
}

impl CheckpointArgs {
    /// The settings these flags describe.
    pub fn config(&self) -> CheckpointConfig {
        CheckpointConfig {
            enabled: !self.no_checkpoints,
            dir: self.checkpoint_dir.clone(),
            interval: Duration::from_millis(self.checkpoint_interval_ms),
            retain: self.checkpoint_retain,
            full_every: self.checkpoint_full_every,
            drop_orphaned: self.drop_orphaned_state,
            exactly_once: self.exactly_once,
        }
    }
}

/// Workers and processes, as timely's flags.
///
/// Part of [`JobArgs`]; flatten it alone into a binary that runs a timely dataflow
/// without Kafka (the benchmarks do).
#[derive(Args, Clone, Debug)]
pub struct ClusterArgs {
    /// Worker threads per process (timely -w).
    #[arg(short = 'w', long = "workers", default_value_t = Cluster::default().workers)]
    pub workers: usize,
    /// Number of processes (timely -n).
    #[arg(short = 'n', long = "processes", default_value_t = Cluster::default().processes)]
    pub processes: usize,
    /// Index of this process (timely -p).
    #[arg(short = 'p', long = "process", default_value_t = Cluster::default().process)]
    pub process: usize,
    /// File with one host:port per process (timely -h).
    #[arg(short = 'h', long = "hostfile")]
    pub hostfile: Option<PathBuf>,
}

impl ClusterArgs {
    /// The cluster these flags describe.
    pub fn cluster(&self) -> Cluster {
        Cluster {
            workers: self.workers,
            processes: self.processes,
            process: self.process,
            hostfile: self.hostfile.clone(),
        }
    }

    /// Workers in all processes.
    pub fn peers(&self) -> usize {
        self.workers * self.processes
    }

    /// The timely configuration these flags describe, checked as a job's is.
    pub fn timely_config(&self) -> Result<timely::Config> {
        self.cluster().timely_config()
    }
}

/// The default source settings, which the flags' defaults come from.
fn source() -> SourceConfig {
    SourceConfig::default()
}

/// A duration in whole milliseconds, as the `*_ms` flags take it.
fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

impl JobArgs {
    /// The job configuration these arguments describe, checked.
    pub fn into_config(self) -> Result<JobConfig> {
        let mut kafka = KafkaConfig::new(self.brokers, self.group);
        if let Some(path) = &self.kafka_config {
            kafka = kafka.properties_file(path)?;
        }
        for s in &self.extra {
            kafka = kafka.set(&s.key, &s.value)?;
        }
        kafka.validate()?;
        let source = SourceConfig {
            start: self.from,
            fallback: self.fallback,
            bounded: self.bounded,
            epoch_interval: Duration::from_millis(self.epoch_ms),
            out_of_orderness: Duration::from_millis(self.out_of_orderness_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            max_epochs_ahead: self.max_epochs_ahead,
            batch_size: self.batch_size,
            idle_advance: self.idle_advance,
            max_future: Duration::from_millis(self.max_future_ms),
            on_out_of_range: self.on_out_of_range,
            max_sink_backlog: self.max_sink_backlog,
            max_lookup_backlog: self.max_lookup_backlog,
            ..SourceConfig::default()
        };
        source.validate()?;
        let checkpoint = self.checkpoints.config();
        checkpoint.validate()?;
        Ok(JobConfig {
            source,
            checkpoint,
            metrics_addr: self.metrics_addr,
            status_every: Duration::from_secs(self.status_secs),
            progress: !self.no_progress,
            cluster: self.cluster.cluster(),
            dead_letter_topic: self.dead_letter_topic,
            poison_output: self.poison_output,
            check_unconnected: !self.no_unconnected_check,
            ..JobConfig::new(kafka)
        })
    }
}

/// Sets `stop` when the process gets SIGINT or SIGTERM, so the job drains and commits.
pub fn stop_on_signals(stop: &Arc<AtomicBool>) -> std::io::Result<()> {
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, stop.clone())?;
    Ok(())
}

/// Installs a `tracing` subscriber writing to stderr, filtered by `RUST_LOG` (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    #[command(disable_help_flag = true)]
    struct Args {
        #[command(flatten)]
        job: JobArgs,
    }

    #[test]
    fn operating_flags_reach_the_config() {
        let a = Args::parse_from([
            "job",
            "--metrics-addr",
            "127.0.0.1:9898",
            "--status-secs",
            "3",
            "--no-progress",
            "--batch-size",
            "100",
        ]);
        let c = a.job.into_config().unwrap();
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9898".parse().unwrap()));
        assert_eq!(c.status_every, Duration::from_secs(3));
        assert!(!c.progress);
        assert_eq!(c.source.batch_size, 100);
        let d = Args::parse_from(["job"]).job.into_config().unwrap();
        assert_eq!(d.metrics_addr, None);
        assert!(d.progress);
    }

    #[test]
    fn defaults_are_the_config_types_defaults() {
        let c = Args::parse_from(["job"]).job.into_config().unwrap();
        let source = SourceConfig::default();
        assert_eq!(c.source.start, source.start);
        assert_eq!(c.source.fallback, source.fallback);
        assert_eq!(c.source.epoch_interval, source.epoch_interval);
        assert_eq!(c.source.out_of_orderness, source.out_of_orderness);
        assert_eq!(c.source.idle_timeout, source.idle_timeout);
        assert_eq!(c.source.max_epochs_ahead, source.max_epochs_ahead);
        assert_eq!(c.source.batch_size, source.batch_size);
        assert_eq!(c.source.idle_advance, source.idle_advance);
        assert_eq!(c.source.max_future, source.max_future);
        assert_eq!(c.source.on_out_of_range, source.on_out_of_range);
        assert_eq!(c.source.max_sink_backlog, source.max_sink_backlog);
        assert_eq!(c.dead_letter_topic, None);
        assert_eq!(c.poison_output, JobConfig::default().poison_output);
        assert_eq!(c.status_every, JobConfig::default().status_every);
        let cluster = Cluster::default();
        assert_eq!(
            (c.cluster.workers, c.cluster.processes),
            (cluster.workers, cluster.processes)
        );
        assert_eq!(c.kafka.group, KafkaConfig::default().group);
    }
}
