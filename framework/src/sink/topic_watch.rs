//! Watching a Kafka sink's topic: a topic deleted while the job runs fails the job.
//!
//! A producer whose topic is deleted does not notice on every broker: Kafka answers
//! its writes with "unknown topic" (and, with auto-creation on, the producer's next
//! metadata request creates a fresh, empty topic), while the test broker Tansu
//! acknowledges writes to a deleted topic and keeps nothing. Either way the user's
//! output topic is gone, which the job cannot repair. So worker 0 asks the broker for
//! the topic's metadata every [`CHECK_EVERY`] through a client that never creates
//! topics, and fails the job naming the sink and topic once the topic, seen at least
//! once, is missing on two checks in a row (one stale answer is not enough).
//! A topic missing from the start is left to the producer: the broker creates it, or
//! its records fail after `topic.metadata.propagation.max.ms` (30 s) naming the sink.
//! A broker that cannot be reached is not a missing topic: the watch waits.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;

use crate::config::KafkaConfig;
use crate::error::Error;
use crate::job::Shared;

/// How often the watch asks for the topic's metadata.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);

/// How many checks in a row must miss a topic seen before for it to count as deleted.
const MISSES: u32 = 2;

/// Stops the watch thread when dropped (with the sink operator that owns it).
pub(crate) struct TopicWatch {
    _stop: Sender<()>,
}

/// What one metadata answer says about the topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Present,
    Missing,
    /// No answer (broker down, timeout): says nothing about the topic.
    Unknown,
}

/// The watch's state: whether the topic was ever seen, and the misses in a row.
#[derive(Debug, Default)]
struct State {
    seen: bool,
    misses: u32,
}

impl State {
    /// Takes one answer in; true once the topic counts as deleted.
    fn observe(&mut self, answer: Seen) -> bool {
        match answer {
            Seen::Present => {
                self.seen = true;
                self.misses = 0;
            }
            Seen::Missing if self.seen => self.misses += 1,
            Seen::Missing | Seen::Unknown => {}
        }
        self.misses >= MISSES
    }
}

/// Starts watching `topic` of the sink `name`; the job fails if it is deleted.
pub(crate) fn watch(
    kafka: &KafkaConfig,
    shared: Arc<Shared>,
    name: String,
    topic: String,
) -> Result<TopicWatch, Error> {
    let client: BaseConsumer = kafka
        .consumer_config()
        .set("allow.auto.create.topics", "false")
        .create()
        .map_err(|e| {
            Error::kafka(
                format!("creating the topic watch of {name}"),
                crate::config::redact_client_error(e),
            )
        })?;
    let (stop, stopped): (Sender<()>, Receiver<()>) = crossbeam_channel::bounded(0);
    let context = format!("starting the topic watch of {name}");
    std::thread::Builder::new()
        .name(format!("freshet-watch-{topic}"))
        .spawn(move || {
            let mut state = State::default();
            loop {
                if state.observe(ask(&client, &topic)) {
                    shared.fail(Error::Sink {
                        sink: name,
                        reason: format!(
                            "its output topic {topic} no longer exists (deleted while the \
                             job ran); results written since may be lost: recreate the topic \
                             and restart the job"
                        ),
                    });
                    return;
                }
                match stopped.recv_timeout(CHECK_EVERY) {
                    Err(RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
            }
        })
        .map_err(|e| Error::Runtime(format!("{context}: {e}")))?;
    Ok(TopicWatch { _stop: stop })
}

/// One metadata request for `topic`.
fn ask(client: &BaseConsumer, topic: &str) -> Seen {
    let Ok(md) = client.fetch_metadata(Some(topic), CHECK_EVERY) else {
        return Seen::Unknown;
    };
    match md.topics().iter().find(|t| t.name() == topic) {
        Some(t) => match t.error() {
            None if !t.partitions().is_empty() => Seen::Present,
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => Seen::Missing,
            _ => Seen::Unknown,
        },
        None => Seen::Missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_topic_counts_as_deleted_after_two_misses_once_it_was_seen() {
        let mut s = State::default();
        // Missing from the start: left to the producer (auto-creation, or its timeout).
        assert!(!s.observe(Seen::Missing));
        assert!(!s.observe(Seen::Missing));
        assert!(!s.observe(Seen::Present));
        assert!(!s.observe(Seen::Missing));
        // An unanswered request neither confirms nor clears a miss.
        assert!(!s.observe(Seen::Unknown));
        assert!(!s.observe(Seen::Present));
        assert!(!s.observe(Seen::Missing));
        assert!(s.observe(Seen::Missing));
    }
}
