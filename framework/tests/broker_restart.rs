//! The broker killed for 10 s mid-run and restarted: a private Tansu on its own port (the
//! shared test broker is never stopped), killed with SIGKILL under a live job and
//! restarted on the same port. Its storage is a fresh bucket of the S3-protocol test
//! server, so topics (with their ids), records, committed offsets and producer state
//! outlive the restart, as a real cluster's do. The job must stay alive, log the outage,
//! and count every record written before and after it, committing again once the
//! broker is back.
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use support::*;

/// A Tansu of the test's own, storing in a fresh bucket of the S3-protocol test
/// server, started and stopped with `scripts/kafka-broker` on a free port, killed when
/// dropped.
struct PrivateBroker {
    dir: PathBuf,
    port: u16,
    bucket: String,
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
        // A bucket of its own (S3 bucket names: lowercase letters, digits, dashes).
        let bucket = unique("broker").to_lowercase().replace('_', "-");
        let created = Command::new("curl")
            .args(["-sf", "-o", "/dev/null", "-X", "PUT"])
            .arg(format!("http://127.0.0.1:{}/{bucket}", s3_port()))
            .status()
            .expect("curl");
        assert!(created.success(), "could not create bucket {bucket}");
        let broker = PrivateBroker { dir, port, bucket };
        broker.run_script("start");
        broker
    }

    fn run_script(&self, command: &str) {
        let mut cmd = Command::new(Self::script());
        cmd.arg(command)
            .env("FRESHET_BROKER_PORT", self.port.to_string())
            .env("FRESHET_BROKER_DIR", &self.dir)
            .env("FRESHET_BROKER_STORAGE", format!("s3://{}/", self.bucket))
            // Tansu's object store reads AWS_ENDPOINT.
            .env("AWS_ENDPOINT", format!("http://127.0.0.1:{}", s3_port()));
        let out = with_s3(&mut cmd, s3_port()).output().unwrap();
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

/// The sum of the window counts in `output`: how many events the job counted.
fn counted(base: &ClientConfig, output: &str) -> u64 {
    decode::<WindowCount>(&read_topic_with(base, output, 1))
        .iter()
        .map(|w| w.value)
        .sum()
}

/// `n` events dated over the next second: ahead of the job's watermark, which follows
/// the wall clock (`--idle-advance`), so none is late.
fn events_now(seed: u64, n: usize) -> Vec<(i32, Event)> {
    let now = freshet::clock::now_ms();
    generate(seed, n, 8, 1, now, 1_000, 0)
}

/// The last `commits=N` of the job's status lines.
fn commits(log: &str) -> u64 {
    log.lines()
        .rev()
        .filter_map(|l| l.split("commits=").nth(1))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_broker_restart_keeps_the_job_alive_and_its_counts_complete() {
    let broker = PrivateBroker::start();
    let base = broker.client();
    let input = create_topic_with(&base, "restart-in", 1);
    let output = create_topic_with(&base, "restart-out", 1);
    produce_with(&base, &input, &events_now(1, 200)).unwrap();

    let log = std::env::temp_dir().join(unique("restart-job.log"));
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut job = Running(
        job_binary(&input, &output, &unique("restart-group"))
            .env("FRESHET_BROKERS", broker.address())
            .env("RUST_LOG", "info")
            .args(["--status-secs", "1"])
            .args(["--idle-timeout-ms", "300", "--idle-advance"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let alive = |job: &mut Running| match job.0.try_wait().unwrap() {
        None => true,
        Some(status) => {
            eprintln!("the job exited: {status}");
            false
        }
    };
    wait_for(Duration::from_secs(60), "the first 200 counted", || {
        assert!(alive(&mut job), "the job exited:\n{}", read_log());
        counted(&base, &output) == 200
    });
    wait_for(Duration::from_secs(30), "a commit", || {
        commits(&read_log()) > 0
    });

    broker.kill();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(10)); // the outage under test
    assert!(
        alive(&mut job),
        "the job exited during the outage:\n{}",
        read_log()
    );
    let before = commits(&read_log());
    broker.run_script("start");
    produce_with(&base, &input, &events_now(2, 300)).unwrap();
    let back = down.elapsed();
    // Every record is counted once: none lost with the broker, none read twice.
    wait_for(
        Duration::from_secs(60),
        "the job to count the input written after the restart",
        || {
            assert!(alive(&mut job), "the job exited:\n{}", read_log());
            counted(&base, &output) >= 500
        },
    );
    wait_for(
        Duration::from_secs(30),
        "a commit after the restart",
        || commits(&read_log()) > before,
    );
    let outage = read_log();
    eprintln!("broker back {back:?} after it went down");
    assert!(
        outage.contains("kafka client error") && outage.contains("AllBrokersDown"),
        "the outage is logged:\n{outage}"
    );
    assert_eq!(counted(&base, &output), 500, "{outage}");
    let _ = std::fs::remove_file(&log);
}
