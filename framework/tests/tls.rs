//! Connecting to a cluster the way production clusters are reached: over TLS (a fresh
//! Tansu behind stunnel, with a CA and certificate made for the test by
//! `scripts/tls-broker`), configured through a `--kafka-config` properties file whose
//! values come from environment variables, with zstd-compressed input and output. A
//! wrong CA fails with an error naming the certificate problem; SASL (SCRAM) reaches
//! the broker's authentication and fails with a clear error (Tansu cannot create users
//! while it requires authentication); secrets never reach stderr or `--help`.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rdkafka::producer::{BaseRecord, Producer, ThreadedProducer};
use rdkafka::ClientConfig;
use support::*;

/// A TLS-only broker started by `scripts/tls-broker`, stopped when dropped.
struct TlsBroker {
    dir: PathBuf,
    addr: String,
}

impl TlsBroker {
    fn start(extra: &[&str]) -> TlsBroker {
        let dir = std::env::temp_dir().join(unique("freshet-tls"));
        let out = Command::new(script())
            .arg("start")
            .arg(&dir)
            .args(extra)
            .output()
            .expect("running scripts/tls-broker");
        assert!(
            out.status.success(),
            "scripts/tls-broker start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let addr = String::from_utf8(out.stdout).unwrap().trim().to_string();
        assert!(
            addr.starts_with("127.0.0.1:"),
            "unexpected address {addr:?}"
        );
        TlsBroker { dir, addr }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    fn wrong_ca(&self) -> PathBuf {
        self.dir.join("wrong-ca.pem")
    }

    /// Client settings for this broker over TLS, trusting `ca`.
    fn client(&self, ca: &Path) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.addr)
            .set("security.protocol", "ssl")
            .set("ssl.ca.location", ca.to_str().unwrap());
        c
    }
}

impl Drop for TlsBroker {
    fn drop(&mut self) {
        let _ = Command::new(script()).arg("stop").arg(&self.dir).status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tls-broker")
}

/// Writes `text` to a fresh properties file.
fn properties(text: &str) -> tempfile_path::Path {
    let path = std::env::temp_dir().join(unique("client.properties"));
    std::fs::write(&path, text).unwrap();
    tempfile_path::Path(path)
}

/// Runs the test job from `topics.0` to `topics.1` against `brokers` with
/// `--kafka-config file`, the variables `envs` and the flags `args`; fails the test if
/// it runs longer than `limit`.
fn run_job(
    brokers: &str,
    file: &Path,
    envs: &[(&str, &str)],
    topics: (&str, &str),
    args: &[&str],
    limit: Duration,
) -> Output {
    let mut cmd = job_binary(topics.0, topics.1, &unique("tls-group"));
    cmd.env("FRESHET_BROKERS", brokers)
        .env("RUST_LOG", "debug")
        .arg("--kafka-config")
        .arg(file)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("spawning the test job");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for the test job"),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the test job did not finish within {limit:?}");
        }
    }
}

#[test]
fn a_job_reads_zstd_input_and_writes_zstd_output_over_tls() {
    let broker = TlsBroker::start(&[]);
    let tls = broker.client(&broker.ca());
    let input = create_topic_with(&tls, "tls-in", 2);
    let output = create_topic_with(&tls, "tls-out", 2);
    let events = generate(5, 4_000, 8, 2, 1_700_000_000_000, 8_000, 200);

    // The input is produced zstd-compressed; the producer's statistics show the bytes
    // on the wire are far fewer than the payloads (JSON compresses well), so zstd was
    // really used.
    let mut zstd = tls.clone();
    zstd.set("compression.type", "zstd");
    produce_with(&zstd, &input, &events).expect("producing zstd over TLS");
    let payload_bytes: usize = events
        .iter()
        .map(|(_, e)| serde_json::to_vec(e).unwrap().len())
        .sum();
    let probe = create_topic_with(&tls, "tls-zstd-probe", 2);
    let wire = wire_bytes(&zstd, &probe, &events);
    assert!(
        wire * 3 < payload_bytes,
        "zstd producer sent {wire} bytes for {payload_bytes} bytes of JSON"
    );

    let file = properties(
        "# TLS to the test broker; the CA path comes from the environment\n\
         security.protocol=SSL\n\
         ssl.ca.location=${FRESHET_TEST_CA}\n\
         compression.type = zstd\n",
    );
    let ca = broker.ca();
    let out = run_job(
        &broker.addr,
        &file.0,
        &[("FRESHET_TEST_CA", ca.to_str().unwrap())],
        (&input, &output),
        &["--bounded", "--no-progress"],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "the job over TLS failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = decode::<WindowCount>(&read_topic_with(&tls, &output, 2));
    let mut counts = std::collections::BTreeMap::new();
    for w in &got {
        *counts.entry((w.key, w.start)).or_insert(0) += w.value;
    }
    assert_eq!(
        counts,
        reference_counts(events.iter().map(|(_, e)| e), 1000)
    );
}

/// Bytes a zstd producer puts on the wire for `events` (librdkafka's statistics).
fn wire_bytes(base: &ClientConfig, topic: &str, events: &[(i32, Event)]) -> usize {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Stats(Arc<Mutex<u64>>);
    impl rdkafka::ClientContext for Stats {
        fn stats(&self, s: rdkafka::Statistics) {
            let tx: u64 = s
                .brokers
                .values()
                .filter(|b| b.nodeid >= 0)
                .map(|b| b.txbytes)
                .sum();
            *self.0.lock().unwrap() = tx;
        }
    }
    impl rdkafka::producer::ProducerContext for Stats {
        type DeliveryOpaque = ();
        fn delivery(&self, _: &rdkafka::producer::DeliveryResult<'_>, _: ()) {}
    }
    let stats = Stats(Arc::new(Mutex::new(0)));
    let producer: ThreadedProducer<Stats> = base
        .clone()
        .set("linger.ms", "50")
        .set("statistics.interval.ms", "100")
        .create_with_context(stats.clone())
        .unwrap();
    let mut sent = 0;
    for (p, e) in events {
        let payload = serde_json::to_vec(e).unwrap();
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(*p)
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .unwrap();
        sent += 1;
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    assert_eq!(sent, events.len());
    // The counter includes metadata requests; it is final once two reports agree.
    let mut last = 0;
    wait_for(Duration::from_secs(10), "producer statistics", || {
        let now = *stats.0.lock().unwrap();
        let stable = now > 0 && now == last;
        last = now;
        stable
    });
    last as usize
}

#[test]
fn a_wrong_ca_fails_with_an_error_naming_the_certificate_problem() {
    let broker = TlsBroker::start(&[]);
    let tls = broker.client(&broker.ca());
    let input = create_topic_with(&tls, "tls-wrong-ca", 1);
    let file = properties("security.protocol=SSL\nssl.ca.location=${FRESHET_TEST_CA}\n");
    let wrong = broker.wrong_ca();
    let out = run_job(
        &broker.addr,
        &file.0,
        &[("FRESHET_TEST_CA", wrong.to_str().unwrap())],
        (&input, &input),
        &["--bounded", "--no-progress"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a job trusting the wrong CA succeeded"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("certificate verify failed") && last.contains("ssl.ca.location"),
        "the final error does not name the certificate problem: {last}"
    );
}

#[test]
fn sasl_scram_reaches_the_broker_and_fails_clearly_without_showing_the_password() {
    let broker = TlsBroker::start(&["--authentication"]);
    let secret = format!("pw-{}", unique("s"));
    let file = properties(
        "security.protocol=SASL_SSL\n\
         ssl.ca.location=${FRESHET_TEST_CA}\n\
         sasl.mechanism=SCRAM-SHA-256\n\
         sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required \\\n\
         \x20   username=\"alice\" password=\"${FRESHET_TEST_SECRET}\";\n",
    );
    let ca = broker.ca();
    let out = run_job(
        &broker.addr,
        &file.0,
        &[
            ("FRESHET_TEST_CA", ca.to_str().unwrap()),
            ("FRESHET_TEST_SECRET", &secret),
        ],
        ("in", "out"),
        &["--bounded", "--no-progress"],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a login with an unknown user succeeded"
    );
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("SASL authentication error") && last.contains("unknown-user"),
        "the final error does not name the authentication problem: {last}"
    );
    assert!(
        !stderr.contains(&secret),
        "the password appears in the job's debug log"
    );
}

#[test]
fn secrets_stay_out_of_help_and_missing_variables_are_named() {
    let secret = format!("pw-{}", unique("s"));
    let file = properties("sasl.password=${FRESHET_TEST_SECRET}\n");
    let help = Command::new(env!("CARGO_BIN_EXE_freshet-test-job"))
        .arg("--help")
        .env("FRESHET_KAFKA_CONFIG", &file.0)
        .env("FRESHET_TEST_SECRET", &secret)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(text.contains("--kafka-config <FILE>"), "{text}");
    assert!(!text.contains(&secret));

    // A variable that is not set is named, with the file and line; no value is shown.
    let file = properties("client.id=x\nsasl.password=${FRESHET_TEST_UNSET_VARIABLE}\n");
    let out = run_job(
        &brokers(),
        &file.0,
        &[],
        ("in", "out"),
        &[],
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!(
            "{}:2: sasl.password: environment variable FRESHET_TEST_UNSET_VARIABLE is not set",
            file.0.display()
        )),
        "{stderr}"
    );

    // The keys Freshet controls are refused with the same message as on -X.
    let file = properties("bootstrap.servers=elsewhere:9092\n");
    let from_file = run_job(
        &brokers(),
        &file.0,
        &[],
        ("in", "out"),
        &[],
        Duration::from_secs(30),
    );
    let from_flag = job_binary("in", "out", "g")
        .args(["-X", "bootstrap.servers=elsewhere:9092"])
        .output()
        .unwrap();
    let message = "librdkafka key 'bootstrap.servers' is set by Freshet and cannot be overridden with -X or --kafka-config; use --brokers";
    assert!(String::from_utf8_lossy(&from_file.stderr).contains(message));
    assert!(String::from_utf8_lossy(&from_flag.stderr).contains(message));
}
