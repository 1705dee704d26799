//! What the example jobs do with malformed messages: print them.

use freshet::{Job, PrintStdout};

/// Prints malformed messages of a source on stdout, with their coordinates.
pub(crate) fn report_malformed(
    job: &Job<'_>,
    errors: timely::dataflow::StreamVec<'_, freshet::Time, freshet::SourceError>,
) {
    errors.print_with(job, "malformed", |e| {
        format!(
            "malformed {}[{}]@{}: {}",
            e.topic, e.partition, e.offset, e.reason
        )
    });
}
