//! Sinks: where results leave the dataflow, and when they count as durable.
//!
//! Every sink has an acknowledgement stream whose frontier holds a capability at the
//! time of each record written but not yet acknowledged; [`register_acks`] connects
//! it to the worker's commit probe. A sink that acknowledges at once (stdout, an
//! in-memory collection) lets its acknowledgement frontier follow its input.

pub mod collect;
pub mod dead_letter;
pub mod exactly_once;
pub mod kafka;
pub mod stdout;
pub mod topic_watch;

use prometheus::IntCounter;
use timely::dataflow::operators::Probe;
use timely::dataflow::Stream;
use timely::Container;

use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::Time;

/// Connects a sink's acknowledgement stream to the job's commit probe.
pub fn register_acks<C: Container>(job: &Job<'_>, acks: Stream<'_, Time, C>) {
    acks.probe_with(job.commits().probe());
    job.commits().add_sink();
}

/// The counter of records `sink` wrote and had acknowledged, resolved once.
pub(crate) fn records_counter(metrics: &Metrics, sink: &str) -> IntCounter {
    metrics.prom.sink_records.with_label_values(&[sink])
}
