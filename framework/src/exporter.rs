//! The Prometheus text endpoint (`--metrics-addr`): `GET /metrics` on a small HTTP
//! server (tiny_http) in its own thread, encoding the job's [`crate::metrics::PromMetrics`]
//! registry with the `prometheus` crate. Any other path answers 404.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::metrics::Metrics;

/// A running endpoint; stopped when dropped.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Serves `metrics` on `addr` (port 0 picks a free port; see [`MetricsServer::addr`]).
    pub fn start(addr: SocketAddr, metrics: Arc<Metrics>) -> Result<Self> {
        let server = tiny_http::Server::http(addr)
            .map_err(|e| Error::Config(format!("--metrics-addr {addr}: {e}")))?;
        let addr = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| Error::Config(format!("--metrics-addr {addr}: not an IP address")))?;
        let server = Arc::new(server);
        let s = server.clone();
        let thread = std::thread::Builder::new()
            .name("freshet-metrics".into())
            .spawn(move || {
                for request in s.incoming_requests() {
                    let response = if request.url() == "/metrics" || request.url() == "/" {
                        let header = tiny_http::Header::from_bytes(
                            &b"Content-Type"[..],
                            &b"text/plain; version=0.0.4"[..],
                        )
                        .expect("a valid header");
                        tiny_http::Response::from_string(metrics.prom.encode()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n")
                            .with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| Error::Runtime(format!("starting the metrics thread: {e}")))?;
        tracing::info!(%addr, "serving Prometheus metrics on http://{addr}/metrics");
        Ok(MetricsServer {
            server,
            addr,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
