//! The one error type of the `freshet` library.

use thiserror::Error;

/// What can go wrong building or running a Freshet job.
#[derive(Debug, Error)]
pub enum Error {
    /// A setting is missing, malformed or not allowed.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A topic the job reads does not exist on the cluster.
    #[error("topic '{topic}' does not exist on {brokers} (create it first, e.g. scripts/kafka-broker create-topic {topic} N)")]
    MissingTopic {
        /// The topic that was asked for.
        topic: String,
        /// The bootstrap servers that were asked.
        brokers: String,
    },
    /// A Kafka client call failed.
    #[error("kafka: {context}: {source}")]
    Kafka {
        /// What Freshet was doing.
        context: String,
        /// The client's error.
        #[source]
        source: rdkafka::error::KafkaError,
    },
    /// A sink could not write its output durably; nothing after it is committed.
    #[error("sink {sink} failed: {reason}")]
    Sink {
        /// The sink's operator name.
        sink: String,
        /// Why.
        reason: String,
    },
    /// The schema registry could not be reached or refused a request.
    #[error("schema registry: {0}")]
    Registry(String),
    /// timely could not start or a worker failed.
    #[error("runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// Wraps a Kafka client error with what Freshet was doing.
    pub fn kafka(context: impl Into<String>, source: rdkafka::error::KafkaError) -> Self {
        Error::Kafka {
            context: context.into(),
            source,
        }
    }
}

/// The `freshet` result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
