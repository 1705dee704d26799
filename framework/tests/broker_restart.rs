//! The broker stopped for 5 s and restarted mid-run: a private memory-storage Tansu on
//! its own port (the shared test broker is never stopped), killed with SIGKILL under a
//! live job and restarted on the same port. Memory storage keeps nothing across the
//! restart (topics, records, committed offsets are gone), so the test recreates the
//! topics and asserts what survives in the job: it stays alive, logs the outage, and
//! processes the input written after the restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use support::*;

/// A Tansu of the test's own (memory storage), started and stopped with
/// `scripts/kafka-broker` on a free port, killed when dropped.
struct PrivateBroker {
    dir: PathBuf,
    port: u16,
}

impl PrivateBroker {
    fn script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/kafka-broker")
    }

    /// A broker on a free port; its binary copied from the shared broker's install
    /// when there is one (else the script installs it).
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(unique("freshet-broker"));
        std::fs::create_dir_all(&dir).unwrap();
        let installed = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.broker/tansu");
        if installed.exists() {
            std::fs::copy(&installed, dir.join("tansu")).unwrap();
        }
        let broker = PrivateBroker { dir, port };
        broker.run_script("start");
        broker
    }

    fn run_script(&self, command: &str) {
        let out = Command::new(Self::script())
            .arg(command)
            .env("FRESHET_BROKER_PORT", self.port.to_string())
            .env("FRESHET_BROKER_DIR", &self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka-broker {command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.address());
        c
    }

    /// Kills the broker process at once (a crash, not a clean stop).
    fn kill(&self) {
        let pid = std::fs::read_to_string(self.dir.join("broker.pid")).unwrap();
        let status = Command::new("kill")
            .args(["-KILL", pid.trim()])
            .status()
            .unwrap();
        assert!(status.success());
        // The port is free once the process is gone.
        wait_for(Duration::from_secs(10), "the broker to die", || {
            std::net::TcpStream::connect(self.address()).is_err()
        });
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(self.dir.join("broker.pid")) {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
        if std::env::var_os("KEEP_BROKER_DIR").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Kills the job if the test fails before it stops it.
struct Job(Option<Child>);

impl Drop for Job {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The sum of the window counts in `output`: how many events the job counted.
fn counted(base: &ClientConfig, output: &str) -> u64 {
    decode::<WindowCount>(&read_topic_with(base, output, 1))
        .iter()
        .map(|w| w.value)
        .sum()
}

/// `text` without its terminal colour codes (the job's log colours keys and values).
fn plain_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ parameters final-letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `n` events dated over the next second: ahead of the job's watermark, which follows
/// the wall clock (`--idle-advance`), so none is late.
fn events_now(seed: u64, n: usize) -> Vec<(i32, Event)> {
    let now = freshet::clock::now_ms();
    generate(seed, n, 8, 1, now, 1_000, 0)
}

#[test]
fn a_broker_restart_keeps_the_job_alive_and_reading_and_a_lost_producer_id_fails_it_clearly() {
    let broker = PrivateBroker::start();
    let base = broker.client();
    let input = create_topic_with(&base, "restart-in", 1);
    let output = create_topic_with(&base, "restart-out", 1);
    produce_with(&base, &input, &events_now(1, 200)).unwrap();

    let log = std::env::temp_dir().join(unique("restart-job.log"));
    let read_log = || plain_text(&std::fs::read_to_string(&log).unwrap_or_default());
    let mut job = Job(Some(
        job_binary(&input, &output, &unique("restart-group"))
            .env("FRESHET_BROKERS", broker.address())
            .env("RUST_LOG", "info")
            .args(["--status-secs", "1"])
            // Memory storage: the input may restart behind the job's position.
            .args(["--on-out-of-range", "fallback", "--fallback", "earliest"])
            .args(["--idle-timeout-ms", "300", "--idle-advance"])
            // Records the broker does not take fail the job after 15 s (default 60 s).
            .args(["-X", "message.timeout.ms=15000"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    ));
    wait_for(Duration::from_secs(60), "the first 200 counted", || {
        counted(&base, &output) == 200
    });

    broker.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(5)); // the outage under test
    let alive = |job: &mut Job| match job.0.as_mut().unwrap().try_wait().unwrap() {
        None => true,
        Some(status) => {
            eprintln!("the job exited: {status}");
            false
        }
    };
    assert!(
        alive(&mut job),
        "the job exited during the outage:\n{}",
        read_log()
    );
    broker.run_script("start");
    // Nothing survived the restart: recreate the topics under the same names.
    for topic in [&input, &output] {
        let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
            base.create().unwrap();
        let t = rdkafka::admin::NewTopic::new(topic, 1, rdkafka::admin::TopicReplication::Fixed(1));
        let r = futures_executor::block_on(
            admin.create_topics([&t], &rdkafka::admin::AdminOptions::new()),
        )
        .unwrap();
        assert!(r.iter().all(Result::is_ok), "{r:?}");
    }
    let back = down.elapsed();
    // The recreated input numbers its records from 0 again, and the job goes on from
    // its position, offset 200: of these 500 it reads the last 300 (a persistent
    // broker never reuses offsets).
    produce_with(&base, &input, &events_now(2, 500)).unwrap();
    wait_for(
        Duration::from_secs(30),
        "the job to read the input written after the restart",
        || {
            assert!(alive(&mut job), "the job exited:\n{}", read_log());
            read_log().contains("records_in=500")
        },
    );
    let outage = read_log();
    assert!(
        outage.contains("kafka client error") && outage.contains("AllBrokersDown"),
        "the outage is logged:\n{outage}"
    );

    // The restarted broker lost the idempotent producer's id (memory storage), answers
    // every write with UNKNOWN_PRODUCER_ID, and the results time out: the job fails
    // naming the sink, within the delivery timeout; it neither hangs nor exits 0.
    let child = job.0.take().unwrap();
    let started = Instant::now();
    let mut child = Job(Some(child));
    wait_for(Duration::from_secs(45), "the job to fail", || {
        !alive(&mut child)
    });
    let status = child.0.take().unwrap().wait().unwrap();
    let stderr = read_log();
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "broker back {back:?} after it went down; the job failed {:?} after reading the new input",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("KafkaSink({output})")) && last.contains("timed out"),
        "{last}"
    );
}
