//! A sink that prints each record on standard output.

use std::fmt::Debug;
use std::io::Write;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::StreamVec;

use super::register_acks;
use crate::error::Error;
use crate::job::Job;
use crate::metrics::Metrics;
use crate::time::Time;
use timely::dataflow::operators::Capability;

/// Extension trait: print records.
pub trait PrintStdout<D> {
    /// Prints each record with `format`, one line each; acknowledged once written and
    /// flushed. A write that fails (closed pipe, full disk) fails the job and is never
    /// acknowledged.
    fn print_with<F: Fn(&D) -> String + 'static>(self, job: &Job<'_>, name: &str, format: F);

    /// Prints each record's `Debug` form.
    fn print_stdout(self, job: &Job<'_>, name: &str)
    where
        Self: Sized,
        D: Debug,
    {
        self.print_with(job, name, |d| format!("{d:?}"))
    }
}

impl<'scope, D: 'static> PrintStdout<D> for StreamVec<'scope, Time, D> {
    fn print_with<F: Fn(&D) -> String + 'static>(self, job: &Job<'_>, name: &str, format: F) {
        let metrics = job.metrics().clone();
        let shared = job.shared().clone();
        let sink = format!("Stdout({name})");
        let acks = self.unary::<timely::container::CapacityContainerBuilder<Vec<()>>, _, _, _>(
            Pipeline,
            &sink.clone(),
            move |_cap, _info| {
                let sink_records = super::records_counter(&metrics, &sink);
                // Capabilities of batches that could not be written: never released,
                // so nothing read with them is committed.
                let mut failed: Vec<Capability<Time>> = Vec::new();
                move |input, _output| {
                    let stdout = std::io::stdout();
                    let mut out = stdout.lock();
                    input.for_each(|cap, data| {
                        let written = data
                            .iter()
                            .try_for_each(|d| writeln!(out, "{}", format(d)))
                            .and_then(|()| out.flush());
                        match written {
                            Ok(()) => {
                                Metrics::add(&metrics.records_out, data.len() as u64);
                                sink_records.inc_by(data.len() as u64);
                            }
                            Err(e) => {
                                if let Some(&time) = cap.stamp().iter().next() {
                                    failed.push(cap.delayed(&time, 0));
                                }
                                shared.fail(Error::Sink {
                                    sink: sink.clone(),
                                    reason: format!("writing to stdout failed: {e}"),
                                });
                            }
                        }
                    });
                }
            },
        );
        register_acks(job, acks);
    }
}
