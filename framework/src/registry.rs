//! A Confluent Schema Registry client: registers schemas under subjects, fetches them
//! by id, and caches both, so a codec asks the registry once per schema and not once
//! per record.
//!
//! It speaks the registry's REST API (`POST /subjects/{subject}/versions`,
//! `GET /schemas/ids/{id}`) over HTTP or HTTPS (the system's OpenSSL and CA store), with
//! optional basic authentication (Confluent Cloud's API key and secret). Settings come
//! from code or from the `schema.registry.*` / `basic.auth.*` keys of a
//! `--kafka-config` file ([`SchemaRegistry::from_config`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// The kind of a registered schema (the registry's `schemaType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    /// Avro (the registry's default).
    Avro,
    /// Protocol Buffers (`.proto` text).
    Protobuf,
    /// JSON Schema.
    Json,
}

impl SchemaKind {
    fn name(self) -> &'static str {
        match self {
            SchemaKind::Avro => "AVRO",
            SchemaKind::Protobuf => "PROTOBUF",
            SchemaKind::Json => "JSON",
        }
    }

    fn parse(name: Option<&str>) -> Result<SchemaKind> {
        match name.unwrap_or("AVRO") {
            "AVRO" => Ok(SchemaKind::Avro),
            "PROTOBUF" => Ok(SchemaKind::Protobuf),
            "JSON" => Ok(SchemaKind::Json),
            other => Err(Error::Registry(format!("unknown schemaType '{other}'"))),
        }
    }
}

/// A schema as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its global id (the one the wire format carries).
    pub id: u32,
    /// Its kind.
    pub kind: SchemaKind,
    /// Its text (Avro JSON, `.proto` source, JSON Schema).
    pub schema: String,
}

/// A Schema Registry client with caches; share it with `Arc` between codecs.
pub struct SchemaRegistry {
    url: String,
    authorization: Option<String>,
    agent: ureq::Agent,
    by_id: RwLock<HashMap<u32, Arc<RegisteredSchema>>>,
    registered: RwLock<HashMap<(String, SchemaKind, String), u32>>,
    requests: AtomicU64,
}

impl std::fmt::Debug for SchemaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchemaRegistry")
            .field("url", &self.url)
            .field("authorization", &self.authorization.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

/// Settings of a [`SchemaRegistry`].
#[derive(Clone, Default)]
pub struct RegistryConfig {
    /// Base URL, e.g. `https://psrc-xxxx.europe-west3.gcp.confluent.cloud`.
    pub url: String,
    /// Basic authentication: user (API key) and password (API secret).
    pub basic_auth: Option<(String, String)>,
    /// PEM file of the CA certificates to trust for HTTPS instead of the system's.
    pub ca_location: Option<std::path::PathBuf>,
    /// Timeout of one request (default 30 s).
    pub timeout: Option<Duration>,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field(
                "basic_auth",
                &self.basic_auth.as_ref().map(|(u, _)| (u, "***")),
            )
            .field("ca_location", &self.ca_location)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl RegistryConfig {
    /// Settings from the `schema.registry.*` and `basic.auth.*` keys of a Kafka
    /// configuration (as a `--kafka-config` file gives them): `schema.registry.url`
    /// (the first of a comma-separated list), `basic.auth.user.info` or
    /// `schema.registry.basic.auth.user.info` (`KEY:SECRET`, with
    /// `basic.auth.credentials.source` unset or `USER_INFO`), and
    /// `schema.registry.ssl.ca.location`.
    pub fn from_kafka_config(kafka: &KafkaConfig) -> Result<RegistryConfig> {
        let get = |k: &str| kafka.registry.get(k).map(String::as_str);
        let url = get("schema.registry.url")
            .and_then(|u| u.split(',').map(str::trim).find(|u| !u.is_empty()))
            .ok_or_else(|| {
                Error::Config("no schema.registry.url in the Kafka configuration".into())
            })?
            .to_string();
        if let Some(source) = get("basic.auth.credentials.source")
            .or_else(|| get("schema.registry.basic.auth.credentials.source"))
        {
            if source != "USER_INFO" {
                return Err(Error::Config(format!(
                    "basic.auth.credentials.source={source} is not supported (USER_INFO is)"
                )));
            }
        }
        let basic_auth = match get("basic.auth.user.info")
            .or_else(|| get("schema.registry.basic.auth.user.info"))
        {
            Some(info) => {
                let (u, p) = info.split_once(':').ok_or_else(|| {
                    Error::Config("basic.auth.user.info must be KEY:SECRET".into())
                })?;
                Some((u.to_string(), p.to_string()))
            }
            None => None,
        };
        Ok(RegistryConfig {
            url,
            basic_auth,
            ca_location: get("schema.registry.ssl.ca.location").map(Into::into),
            timeout: None,
        })
    }
}

impl SchemaRegistry {
    /// A client for the registry at `url`, no authentication.
    pub fn new(url: &str) -> Result<SchemaRegistry> {
        SchemaRegistry::with_config(RegistryConfig {
            url: url.into(),
            ..RegistryConfig::default()
        })
    }

    /// A client from the `schema.registry.*` keys of a Kafka configuration
    /// ([`RegistryConfig::from_kafka_config`]).
    pub fn from_config(kafka: &KafkaConfig) -> Result<SchemaRegistry> {
        SchemaRegistry::with_config(RegistryConfig::from_kafka_config(kafka)?)
    }

    /// A client with `config`.
    pub fn with_config(config: RegistryConfig) -> Result<SchemaRegistry> {
        let url = config.url.trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Config(format!(
                "schema registry URL '{url}' must start with http:// or https://"
            )));
        }
        use ureq::tls::{Certificate, RootCerts, TlsConfig, TlsProvider};
        let roots = match &config.ca_location {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::Config(format!(
                        "schema.registry.ssl.ca.location {}: {e}",
                        path.display()
                    ))
                })?;
                let certs = ureq::tls::parse_pem(&pem)
                    .filter_map(|item| match item {
                        Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                        _ => None,
                    })
                    .collect::<Vec<Certificate<'static>>>();
                if certs.is_empty() {
                    return Err(Error::Config(format!(
                        "schema.registry.ssl.ca.location {}: no PEM certificate in it",
                        path.display()
                    )));
                }
                RootCerts::new_with_certs(&certs)
            }
            None => RootCerts::PlatformVerifier,
        };
        let agent = ureq::Agent::config_builder()
            .tls_config(
                TlsConfig::builder()
                    .provider(TlsProvider::NativeTls)
                    .root_certs(roots)
                    .build(),
            )
            .timeout_global(Some(config.timeout.unwrap_or(Duration::from_secs(30))))
            .http_status_as_error(false)
            .build()
            .new_agent();
        let authorization = config
            .basic_auth
            .map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes())));
        Ok(SchemaRegistry {
            url,
            authorization,
            agent,
            by_id: RwLock::new(HashMap::new()),
            registered: RwLock::new(HashMap::new()),
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests this client has made (the caches' misses).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Registers `schema` under `subject` (or finds it registered) and returns its id.
    /// Cached: a second call with the same subject and schema asks nothing.
    pub fn register(&self, subject: &str, kind: SchemaKind, schema: &str) -> Result<u32> {
        let key = (subject.to_string(), kind, schema.to_string());
        if let Some(id) = self
            .registered
            .read()
            .ok()
            .and_then(|m| m.get(&key).copied())
        {
            return Ok(id);
        }
        let mut body = serde_json::json!({ "schema": schema });
        if kind != SchemaKind::Avro {
            body["schemaType"] = kind.name().into();
        }
        let path = format!("/subjects/{}/versions", encode_segment(subject));
        let reply = self.call("POST", &path, Some(body.to_string()))?;
        let id = reply
            .get("id")
            .and_then(serde_json::Value::as_u64)
            .and_then(|id| u32::try_from(id).ok())
            .ok_or_else(|| Error::Registry(format!("POST {path}: no schema id in the reply")))?;
        if let Ok(mut m) = self.registered.write() {
            m.insert(key, id);
        }
        if let Ok(mut m) = self.by_id.write() {
            m.entry(id).or_insert_with(|| {
                Arc::new(RegisteredSchema {
                    id,
                    kind,
                    schema: schema.to_string(),
                })
            });
        }
        Ok(id)
    }

    /// The schema with global id `id`. Cached: ids are immutable in a registry.
    pub fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>> {
        if let Some(s) = self.by_id.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let path = format!("/schemas/ids/{id}");
        let reply = self.call("GET", &path, None)?;
        let schema = reply
            .get("schema")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| Error::Registry(format!("GET {path}: no schema in the reply")))?;
        let kind = SchemaKind::parse(reply.get("schemaType").and_then(|v| v.as_str()))?;
        let s = Arc::new(RegisteredSchema {
            id,
            kind,
            schema: schema.to_string(),
        });
        if let Ok(mut m) = self.by_id.write() {
            m.insert(id, s.clone());
        }
        Ok(s)
    }

    /// One request; the reply's JSON body, or an error with the registry's message.
    fn call(&self, method: &str, path: &str, body: Option<String>) -> Result<serde_json::Value> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let url = format!("{}{path}", self.url);
        let fail = |what: String| Error::Registry(format!("{method} {url}: {what}"));
        const CONTENT: &str = "application/vnd.schemaregistry.v1+json";
        let response = match body {
            Some(body) => {
                let mut req = self.agent.post(&url).header("Content-Type", CONTENT);
                req = req.header("Accept", CONTENT);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.send(body)
            }
            None => {
                let mut req = self.agent.get(&url).header("Accept", CONTENT);
                if let Some(a) = &self.authorization {
                    req = req.header("Authorization", a);
                }
                req.call()
            }
        };
        let mut response = response.map_err(|e| fail(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| fail(format!("reading the reply: {e}")))?;
        let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
        if !(200..300).contains(&status) {
            let detail = json
                .as_ref()
                .and_then(|j| j.get("message"))
                .and_then(|m| m.as_str())
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(200).collect());
            let code = json
                .as_ref()
                .and_then(|j| j.get("error_code"))
                .map(|c| format!(" (error_code {c})"))
                .unwrap_or_default();
            return Err(fail(format!("HTTP {status}{code}: {detail}")));
        }
        json.ok_or_else(|| fail("the reply is not JSON".into()))
    }
}

/// Percent-encodes one URL path segment.
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 with padding (basic authentication).
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, &b| a << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_and_segments() {
        assert_eq!(base64(b"key:secret"), "a2V5OnNlY3JldA==");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
        assert_eq!(encode_segment("orders-value"), "orders-value");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn settings_come_from_the_properties_keys() {
        let mut kafka = KafkaConfig::default();
        assert!(RegistryConfig::from_kafka_config(&kafka).is_err());
        kafka
            .registry
            .insert("schema.registry.url".into(), "https://a, https://b".into());
        kafka
            .registry
            .insert("basic.auth.user.info".into(), "KEY:SE:CRET".into());
        let c = RegistryConfig::from_kafka_config(&kafka).unwrap();
        assert_eq!(c.url, "https://a");
        assert_eq!(c.basic_auth, Some(("KEY".into(), "SE:CRET".into())));
        assert!(!format!("{c:?}").contains("CRET"));
        kafka.registry.insert(
            "basic.auth.credentials.source".into(),
            "SASL_INHERIT".into(),
        );
        assert!(RegistryConfig::from_kafka_config(&kafka)
            .unwrap_err()
            .to_string()
            .contains("USER_INFO"));
        assert!(SchemaRegistry::new("ftp://x").is_err());
    }
}
