//! The S3-protocol object store the checkpoint tests use (moto's server, started by
//! `scripts/s3-server`): its address, a fresh location per test, and private servers a
//! test may stop and start.

use std::path::PathBuf;
use std::process::Command;

use super::kafka::unique;

/// The shared server's port: `FRESHET_S3_PORT`, default 9310 (`scripts/test` starts it).
pub fn s3_port() -> u16 {
    super::knob("FRESHET_S3_PORT").unwrap_or(9310)
}

/// The bucket `scripts/s3-server` creates.
pub const BUCKET: &str = "freshet-test";

/// A fresh checkpoint location in the bucket.
pub fn s3_location(prefix: &str) -> String {
    format!("s3://{BUCKET}/{}", unique(prefix))
}

/// Points a job at the server on `port`: the `AWS_*` settings a user would set.
pub fn with_s3(cmd: &mut Command, port: u16) -> &mut Command {
    cmd.env("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{port}"))
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server")
}

/// A server of the test's own, on its own port and directory: stopped when dropped.
pub struct PrivateS3 {
    /// Its port.
    pub port: u16,
    dir: PathBuf,
}

impl PrivateS3 {
    /// Starts a server on `port` (with the bucket).
    pub fn start(port: u16) -> Self {
        let dir = std::env::temp_dir().join(unique("freshet-s3"));
        let s3 = PrivateS3 { port, dir };
        s3.run("start");
        s3
    }

    fn run(&self, verb: &str) {
        let status = Command::new(script())
            .arg(verb)
            .env("FRESHET_S3_PORT", self.port.to_string())
            .env("FRESHET_S3_DIR", &self.dir)
            .status()
            .expect("scripts/s3-server");
        assert!(status.success(), "scripts/s3-server {verb} failed");
    }

    /// Stops the server (its objects are gone: moto keeps them in memory).
    pub fn stop(&self) {
        self.run("stop");
    }

    /// Starts it again, empty, with the bucket.
    pub fn restart(&self) {
        self.run("start");
    }
}

impl Drop for PrivateS3 {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("stop")
            .env("FRESHET_S3_PORT", self.port.to_string())
            .env("FRESHET_S3_DIR", &self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
