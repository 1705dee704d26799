//! Typed settings for Kafka clients, sources and sinks.
//!
//! Kafka client settings are applied in three layers: Freshet's defaults, then the
//! user's raw librdkafka keys (`-X key=value`), then the keys Freshet must control
//! for its commit protocol, which a user may not override (see [`CONTROLLED_KEYS`]).

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::ClientConfig;

use crate::error::{Error, Result};

/// librdkafka keys Freshet sets itself; `-X` may not set them.
///
/// * `enable.auto.commit=false`, `enable.auto.offset.store=false`: offsets are
///   committed only after the frontier shows the output is durable.
/// * `enable.partition.eof=true`: end-of-partition events drive bounded mode and
///   idle-partition detection.
/// * `group.id`: set from `--group`.
/// * `bootstrap.servers`: set from `--brokers`.
/// * `auto.offset.reset`: set from `--on-out-of-range` and `--fallback`
///   ([`SourceConfig::on_out_of_range`]).
pub const CONTROLLED_KEYS: &[&str] = &[
    "enable.auto.commit",
    "enable.auto.offset.store",
    "enable.partition.eof",
    "group.id",
    "bootstrap.servers",
    "auto.offset.reset",
];

/// librdkafka keys `-X` may set only to the value durability needs: `acks` (`all` or
/// its synonym `-1`) and `enable.idempotence` (`true`). A sink acknowledges a record,
/// and so lets its input offsets be committed, only when it is durable; `acks=0/1` or a
/// producer that may duplicate or reorder on retry would break that promise.
pub const DURABILITY_KEYS: &[(&str, &[&str])] = &[
    ("acks", &["all", "-1"]),
    ("request.required.acks", &["all", "-1"]),
    ("enable.idempotence", &["true"]),
];

/// What a source does when a partition's committed offset is out of range (past the
/// partition's end, or before its earliest offset after retention deleted records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutOfRange {
    /// Fail the job with the partition and offsets (default: never skip or re-read
    /// records silently).
    Error,
    /// Restart the partition at `--fallback` (earliest or latest), logged at warn.
    Fallback,
}

/// What a Kafka sink does with a record the producer refuses for good (larger than
/// `message.max.bytes`, rejected by the topic): the *poison output* policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PoisonOutput {
    /// Fail the job (default): nothing after the record is committed, so a restart
    /// recomputes it and fails again until the job or the topic is fixed.
    Fail,
    /// Write the record to the dead-letter topic with the reason in its headers and
    /// count it as written (needs a dead-letter topic).
    DeadLetter,
}

/// Where a source starts reading each partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StartFrom {
    /// The group's committed offset; partitions without one start at `fallback`.
    Committed,
    /// The earliest offset still on the broker.
    Earliest,
    /// The end of the partition: only records produced from now on.
    Latest,
}

/// Where a partition with no committed offset starts when reading from committed offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fallback {
    /// The earliest offset still on the broker.
    Earliest,
    /// The end of the partition.
    Latest,
}

/// Connection settings shared by every Kafka client of a job.
///
/// Its `Debug` output shows secret values (passwords, keys, tokens: [`is_secret`]) as
/// `***`, so a logged configuration does not leak them.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub brokers: String,
    /// The consumer group offsets are committed to.
    pub group: String,
    /// Raw librdkafka settings (`--kafka-config FILE`, then `-X key=value`), applied
    /// after Freshet's defaults.
    pub extra: BTreeMap<String, String>,
    /// Schema registry settings (`schema.registry.*`, `basic.auth.*`) from a
    /// `--kafka-config` file; read by `freshet::registry::RegistryConfig`.
    pub registry: BTreeMap<String, String>,
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, v)| (k.clone(), shown_value(k, v).to_string()))
                .collect()
        };
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("group", &self.group)
            .field("extra", &shown(&self.extra))
            .field("registry", &shown(&self.registry))
            .finish()
    }
}

/// Whether the value of setting `key` is a secret that logs and errors must not show:
/// passwords, private keys, tokens, client secrets, JAAS lines, registry credentials.
pub fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "jaas",
        "key.pem",
        "ssl_key",
        "keystore",
        "oauthbearer.config",
        "token",
        "user.info",
        "credentials",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// A client-creation error without the value of a secret setting: librdkafka's
/// "not supported in this build" and similar errors carry the key *and the value*.
pub fn redact_client_error(e: rdkafka::error::KafkaError) -> rdkafka::error::KafkaError {
    use rdkafka::error::KafkaError;
    match e {
        KafkaError::ClientConfig(code, desc, key, value) if is_secret(&key) => {
            let desc = if value.is_empty() {
                desc
            } else {
                desc.replace(&value, "***")
            };
            KafkaError::ClientConfig(code, desc, key, "***".into())
        }
        e => e,
    }
}

/// `value`, or `***` when `key` holds a secret ([`is_secret`]).
pub fn shown_value<'a>(key: &str, value: &'a str) -> &'a str {
    if is_secret(key) {
        "***"
    } else {
        value
    }
}

impl Default for KafkaConfig {
    /// A local broker (`127.0.0.1:9092`) and the group `freshet`.
    fn default() -> Self {
        KafkaConfig::new("127.0.0.1:9092", "freshet")
    }
}

impl KafkaConfig {
    /// Settings for `brokers` and `group`, no extra keys.
    pub fn new(brokers: impl Into<String>, group: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            group: group.into(),
            extra: BTreeMap::new(),
            registry: BTreeMap::new(),
        }
    }

    /// Adds the settings of a Java-style `client.properties` file
    /// ([`crate::properties`]): client keys as by [`KafkaConfig::set`], schema registry
    /// keys to [`KafkaConfig::registry`]. Values may be `${ENV_VAR}` references.
    pub fn properties_file(mut self, path: &std::path::Path) -> Result<Self> {
        let props = crate::properties::load(path)?;
        for p in props.client {
            self.extra.insert(p.key, p.value);
        }
        for p in props.registry {
            self.registry.insert(p.key, p.value);
        }
        Ok(self)
    }

    /// Adds a raw librdkafka setting; rejects the keys Freshet controls.
    pub fn set(mut self, key: &str, value: &str) -> Result<Self> {
        check_passthrough(key, value)?;
        self.extra.insert(key.to_string(), value.to_string());
        Ok(self)
    }

    /// Checks the settings without connecting: non-empty brokers and group, allowed keys.
    pub fn validate(&self) -> Result<()> {
        if self.brokers.trim().is_empty() {
            return Err(Error::Config("--brokers is empty".into()));
        }
        if self.group.trim().is_empty() {
            return Err(Error::Config("--group is empty".into()));
        }
        self.extra
            .iter()
            .try_for_each(|(k, v)| check_passthrough(k, v))
    }

    /// A consumer configuration: defaults, then the user's keys, then the controlled keys.
    pub fn consumer_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("session.timeout.ms", "6000")
            .set("fetch.wait.max.ms", "50")
            .set("queued.max.messages.kbytes", "65536");
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers)
            .set("group.id", &self.group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "true");
        c
    }

    /// A producer configuration: `settings` (the sink's typed knobs) then the user's keys.
    pub fn producer_config(&self, settings: &ProducerSettings) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("linger.ms", settings.linger.as_millis().to_string())
            .set("batch.size", settings.batch_bytes.to_string())
            .set("compression.type", &settings.compression)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set(
                "message.timeout.ms",
                settings.delivery_timeout.as_millis().to_string(),
            );
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c.set("bootstrap.servers", &self.brokers);
        c
    }
}

/// One raw librdkafka setting from the command line (`-X key=value`). Its `Debug`
/// output hides secret values ([`is_secret`]).
#[derive(Clone, PartialEq, Eq)]
pub struct Setting {
    /// The librdkafka key.
    pub key: String,
    /// Its value.
    pub value: String,
}

impl std::fmt::Debug for Setting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.key, shown_value(&self.key, &self.value))
    }
}

/// Parses one `-X key=value` argument into a [`Setting`].
pub fn parse_setting(arg: &str) -> Result<Setting, String> {
    parse_passthrough(arg).map(|(key, value)| Setting { key, value })
}

/// Parses one `-X key=value` argument. Errors never contain the value.
pub fn parse_passthrough(arg: &str) -> Result<(String, String), String> {
    let (k, v) = arg.split_once('=').ok_or_else(|| {
        let shown = if is_secret(arg) { "***" } else { arg };
        format!("'{shown}' is not key=value (e.g. -X fetch.min.bytes=1024)")
    })?;
    let k = k.trim();
    if k.is_empty() {
        return Err(format!("'{arg}' has an empty key"));
    }
    check_passthrough(k, v).map_err(|e| e.to_string())?;
    Ok((k.to_string(), v.to_string()))
}

/// The one rule for `-X key=value` and `--kafka-config`: controlled keys are refused,
/// durability keys only take the values durability needs.
pub(crate) fn check_passthrough(key: &str, value: &str) -> Result<()> {
    check_passthrough_key(key)?;
    if let Some((_, allowed)) = DURABILITY_KEYS.iter().find(|(k, _)| *k == key) {
        if !allowed.contains(&value.trim()) {
            return Err(Error::Config(format!(
                "librdkafka key '{key}={value}' would let sinks acknowledge output that is not durable; \
                 Freshet allows only {key}={} (see docs/configuration.md)",
                allowed.join(" or ")
            )));
        }
    }
    Ok(())
}

/// Refuses the keys Freshet controls, with one message for `-X` and `--kafka-config`.
pub(crate) fn check_passthrough_key(key: &str) -> Result<()> {
    if CONTROLLED_KEYS.contains(&key) {
        let instead = match key {
            "bootstrap.servers" => "; use --brokers",
            "group.id" => "; use --group",
            _ => "",
        };
        return Err(Error::Config(format!(
            "librdkafka key '{key}' is set by Freshet and cannot be overridden with -X or --kafka-config{instead} (see docs/architecture.md)"
        )));
    }
    Ok(())
}

/// How a source reads, stamps and paces its partitions.
#[derive(Clone, Debug)]
pub struct SourceConfig {
    /// Where to start each partition.
    pub start: StartFrom,
    /// Where partitions without a committed offset start (with [`StartFrom::Committed`]).
    pub fallback: Fallback,
    /// Read each partition to its end once, then finish (bounded mode).
    pub bounded: bool,
    /// Length of one epoch, the processing-time round offsets are committed at.
    pub epoch_interval: Duration,
    /// Bounded out-of-orderness: a partition's watermark trails its largest event time by this.
    pub out_of_orderness: Duration,
    /// A partition at its end that has seen nothing for this long stops holding the watermark.
    pub idle_timeout: Duration,
    /// Event times are rounded down to a multiple of this many milliseconds (1 = exact).
    pub tick_ms: u64,
    /// Pause partitions while the source's epoch is more than this many epochs ahead of the
    /// last complete epoch (flow control).
    pub max_epochs_ahead: u64,
    /// Most messages read in one activation of the source.
    pub batch_size: usize,
    /// Payloads larger than this many bytes go to the error stream.
    pub max_record_bytes: usize,
    /// Event times more than this far past the wall clock go to the error stream (and
    /// move no watermark).
    pub max_future: Duration,
    /// When every partition of a worker is idle, advance its watermark with the wall
    /// clock (`--idle-advance`); by default it holds.
    pub idle_advance: bool,
    /// What to do with a committed offset that is out of range.
    pub on_out_of_range: OutOfRange,
    /// Pause reading while some sink of the worker holds more than this many records
    /// not yet acknowledged (flow control by sink backlog, whatever its cause).
    pub max_sink_backlog: usize,
    /// Pause reading (except table sides) while a stream–table lookup of the process
    /// holds more than this many stream records waiting for its table (per lookup
    /// worker): the stream side waits in Kafka while the table is read.
    pub max_lookup_backlog: usize,
}

impl Default for SourceConfig {
    fn default() -> Self {
        SourceConfig {
            start: StartFrom::Committed,
            fallback: Fallback::Earliest,
            bounded: false,
            epoch_interval: Duration::from_millis(200),
            out_of_orderness: Duration::from_millis(500),
            idle_timeout: Duration::from_secs(5),
            tick_ms: 1,
            max_epochs_ahead: 50,
            batch_size: 4096,
            max_record_bytes: 8 << 20,
            max_future: Duration::from_secs(5 * 60),
            idle_advance: false,
            on_out_of_range: OutOfRange::Error,
            max_sink_backlog: 200_000,
            max_lookup_backlog: 100_000,
        }
    }
}

impl SourceConfig {
    /// Checks that every setting is usable.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.epoch_interval.as_millis() == 0 {
            return bad("epoch interval must be at least 1 ms");
        }
        if self.tick_ms == 0 {
            return bad("tick must be at least 1 ms");
        }
        if self.max_epochs_ahead == 0 {
            return bad("max epochs ahead must be at least 1");
        }
        if self.batch_size == 0 {
            return bad("batch size must be at least 1");
        }
        if self.max_sink_backlog == 0 {
            return bad("max sink backlog must be at least 1");
        }
        if self.max_lookup_backlog == 0 {
            return bad("max lookup backlog must be at least 1");
        }
        Ok(())
    }
}

/// Typed producer knobs of a Kafka sink.
#[derive(Clone, Debug)]
pub struct ProducerSettings {
    /// `linger.ms`: how long the producer waits to fill a batch.
    pub linger: Duration,
    /// `batch.size` in bytes.
    pub batch_bytes: usize,
    /// `compression.type`: none, gzip, snappy, lz4 or zstd.
    pub compression: String,
    /// `message.timeout.ms`: after this a record that could not be delivered fails the job.
    pub delivery_timeout: Duration,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        ProducerSettings {
            linger: Duration::from_millis(5),
            batch_bytes: 1 << 20,
            compression: "lz4".into(),
            delivery_timeout: Duration::from_secs(60),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_parses_and_refuses_controlled_keys() {
        assert_eq!(
            parse_passthrough("fetch.min.bytes=1024").unwrap(),
            ("fetch.min.bytes".into(), "1024".into())
        );
        assert_eq!(
            parse_passthrough("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_passthrough("novalue")
            .unwrap_err()
            .contains("not key=value"));
        assert!(parse_passthrough("=x").unwrap_err().contains("empty key"));
        for key in CONTROLLED_KEYS {
            assert!(parse_passthrough(&format!("{key}=x"))
                .unwrap_err()
                .contains("set by Freshet"));
        }
        for bad in ["acks=0", "acks=1", "enable.idempotence=false"] {
            let err = parse_passthrough(bad).unwrap_err();
            assert!(err.contains("not durable"), "{bad}: {err}");
            assert!(KafkaConfig::default()
                .set(bad.split('=').next().unwrap(), "0")
                .is_err());
        }
        assert!(parse_passthrough("acks=all").is_ok());
        assert!(parse_passthrough("acks=-1").is_ok());
        assert!(parse_passthrough("enable.idempotence=true").is_ok());
    }

    #[test]
    fn controlled_keys_are_applied_last() {
        let mut kafka = KafkaConfig::new("127.0.0.1:1", "g");
        kafka
            .extra
            .insert("enable.auto.commit".into(), "true".into()); // bypassing `set`
        assert!(kafka.validate().is_err());
        let c = kafka.consumer_config();
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.partition.eof"), Some("true"));
        assert_eq!(c.get("group.id"), Some("g"));
    }

    /// The client library is built with TLS, SASL (PLAIN, SCRAM, OAUTHBEARER) and every
    /// compression codec: librdkafka refuses these settings when built without them.
    #[test]
    fn tls_sasl_and_every_codec_are_built_in() {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::producer::BaseProducer;
        for (protocol, mechanism) in [
            ("SSL", None),
            ("SASL_SSL", Some("PLAIN")),
            ("SASL_SSL", Some("SCRAM-SHA-256")),
            ("SASL_SSL", Some("SCRAM-SHA-512")),
            ("SASL_SSL", Some("OAUTHBEARER")),
            ("SASL_PLAINTEXT", Some("SCRAM-SHA-512")),
        ] {
            let mut kafka = KafkaConfig::new("127.0.0.1:1", "g")
                .set("security.protocol", protocol)
                .unwrap();
            if let Some(m) = mechanism {
                kafka = kafka
                    .set("sasl.mechanism", m)
                    .unwrap()
                    .set("sasl.username", "u")
                    .unwrap()
                    .set("sasl.password", "p")
                    .unwrap();
            }
            if mechanism == Some("OAUTHBEARER") {
                kafka = kafka
                    .set("sasl.oauthbearer.config", "principal=u")
                    .unwrap()
                    .set("enable.sasl.oauthbearer.unsecure.jwt", "true")
                    .unwrap();
            }
            if let Err(e) = kafka.consumer_config().create::<BaseConsumer>() {
                panic!("{protocol} {mechanism:?}: {e}");
            }
        }
        for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
            let settings = ProducerSettings {
                compression: codec.into(),
                ..ProducerSettings::default()
            };
            let c = KafkaConfig::new("127.0.0.1:1", "g").producer_config(&settings);
            if let Err(e) = c.create::<BaseProducer>() {
                panic!("compression.type={codec}: {e}");
            }
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let kafka = KafkaConfig::new("b:1", "g")
            .set("sasl.password", "hunter2")
            .unwrap()
            .set("ssl.key.password", "hunter3")
            .unwrap()
            .set("sasl.username", "alice")
            .unwrap();
        let shown = format!("{kafka:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("alice"), "{shown}");
        // librdkafka names the value of a setting it refuses; Freshet hides secret ones.
        use rdkafka::consumer::BaseConsumer;
        let refused = KafkaConfig::new("b:1", "g")
            .set("sasl.oauthbearer.client.secret", "hunter4")
            .unwrap()
            .consumer_config()
            .create::<BaseConsumer>()
            .map(|_| ())
            .map_err(redact_client_error)
            .expect_err("OIDC settings in a build without libcurl");
        assert!(!refused.to_string().contains("hunter4"), "{refused}");
        let s = parse_setting("sasl.oauthbearer.client.secret=xyz").unwrap();
        assert_eq!(format!("{s:?}"), "sasl.oauthbearer.client.secret=***");
        assert!(!parse_passthrough("sasl.password:xyz")
            .unwrap_err()
            .contains("xyz"));
    }

    #[test]
    fn source_settings_are_checked() {
        assert!(SourceConfig::default().validate().is_ok());
        let zero = SourceConfig {
            epoch_interval: Duration::ZERO,
            ..SourceConfig::default()
        };
        assert!(zero.validate().is_err());
        let tick = SourceConfig {
            tick_ms: 0,
            ..SourceConfig::default()
        };
        assert!(tick.validate().is_err());
    }
}
