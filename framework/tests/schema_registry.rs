//! Protobuf and Avro in the Confluent wire format, checked two ways without a real
//! registry server (none can be installed here):
//!
//! * against bytes written by Confluent's own Python serializers
//!   (`scripts/confluent-interop`): Freshet decodes them to the same values and encodes
//!   the same values to the same bytes;
//! * the registry client against `FakeRegistry`, a small in-test HTTP server that
//!   answers the two REST calls the client makes (a fake, not a registry): caching,
//!   basic authentication, errors, and Avro schema evolution through ids.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use freshet::codec::RawMessage;
use freshet::registry::{RegistryConfig, SchemaKind, SchemaRegistry};
use freshet::schema::{ConfluentAvro, ConfluentProtobuf};
use freshet::{Decoder, Encoder};

fn msg(payload: &[u8]) -> RawMessage<'_> {
    RawMessage {
        topic: "t",
        partition: 0,
        offset: 0,
        key: None,
        payload: Some(payload),
        timestamp: None,
    }
}

/// `freshet.test.Order` as the Python side defines it.
#[derive(Clone, PartialEq, prost::Message)]
struct Order {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(string, tag = "2")]
    item: String,
    #[prost(sint32, repeated, tag = "3")]
    deltas: Vec<i32>,
}

const ORDER_PROTO: &str = "syntax = \"proto3\";\npackage freshet.test;\n\nmessage Order {\n  uint64 id = 1;\n  string item = 2;\n  repeated sint32 deltas = 3;\n}\n";

#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Reading {
    device: String,
    value: f64,
    count: i64,
    note: Option<String>,
}

/// The schema the Python serializer wrote with (tests/interop/confluent_serializers.py).
const READING: &str = r#"{"type":"record","name":"Reading","namespace":"freshet.test","fields":[
  {"name":"device","type":"string"},{"name":"value","type":"double"},
  {"name":"count","type":"long"},
  {"name":"note","type":["null","string"],"default":null}]}"#;

#[test]
fn payloads_from_confluents_python_serializers_decode_and_reencode_byte_for_byte() {
    let dir = std::env::temp_dir().join(format!("freshet-interop-{}", std::process::id()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/confluent-interop");
    let out = std::process::Command::new(script)
        .arg(&dir)
        .output()
        .expect("running scripts/confluent-interop");
    assert!(
        out.status.success(),
        "scripts/confluent-interop failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ids: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ids.json")).unwrap()).unwrap();
    let avro_id = ids["avro"].as_u64().unwrap() as u32;
    let proto_id = ids["protobuf"].as_u64().unwrap() as u32;

    let avro_bytes = std::fs::read(dir.join("avro.bin")).unwrap();
    let avro = ConfluentAvro::<Reading>::with_id(avro_id, READING).unwrap();
    let reading = Reading {
        device: "sensor-7".into(),
        value: 21.5,
        count: -3,
        note: Some("calibrated".into()),
    };
    assert_eq!(avro.decode(&msg(&avro_bytes)).unwrap(), reading);
    let mut ours = Vec::new();
    avro.encode(&reading, &mut ours).unwrap();
    assert_eq!(
        ours, avro_bytes,
        "Avro bytes differ from the Python serializer's"
    );

    let proto_bytes = std::fs::read(dir.join("protobuf.bin")).unwrap();
    let proto = ConfluentProtobuf::<Order>::with_id(proto_id).expect_ids(&[proto_id]);
    let order = Order {
        id: 42,
        item: "kettle".into(),
        deltas: vec![-1, 0, 300],
    };
    assert_eq!(proto.decode(&msg(&proto_bytes)).unwrap(), order);
    let mut ours = Vec::new();
    proto.encode(&order, &mut ours).unwrap();
    assert_eq!(
        ours, proto_bytes,
        "Protobuf bytes differ from the Python serializer's"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fake Schema Registry: an HTTP server on a free loopback port answering
/// `POST /subjects/{subject}/versions` and `GET /schemas/ids/{id}` from memory, with
/// optional basic authentication. It counts the requests it serves.
struct FakeRegistry {
    url: String,
    served: Arc<AtomicUsize>,
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct FakeState {
    schemas: Vec<(String, Option<String>)>,
    subjects: HashMap<String, Vec<u32>>,
}

impl FakeRegistry {
    fn start(authorization: Option<&str>) -> FakeRegistry {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}", server.server_addr().to_ip().unwrap());
        let served = Arc::new(AtomicUsize::new(0));
        let state = Arc::new(Mutex::new(FakeState::default()));
        let (s, n, auth) = (
            server.clone(),
            served.clone(),
            authorization.map(String::from),
        );
        let thread = std::thread::spawn(move || {
            for mut req in s.incoming_requests() {
                n.fetch_add(1, Ordering::SeqCst);
                let given = req
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.to_string());
                let (status, body) = if auth.is_some() && given != auth {
                    (
                        401,
                        serde_json::json!({"error_code": 401, "message": "Unauthorized"}),
                    )
                } else {
                    let mut text = String::new();
                    let _ = req.as_reader().read_to_string(&mut text);
                    answer(&state, req.method().as_str(), req.url(), &text)
                };
                let _ = req.respond(
                    tiny_http::Response::from_string(body.to_string()).with_status_code(status),
                );
            }
        });
        FakeRegistry {
            url,
            served,
            server,
            thread: Some(thread),
        }
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }
}

impl Drop for FakeRegistry {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn answer(
    state: &Mutex<FakeState>,
    method: &str,
    url: &str,
    body: &str,
) -> (u16, serde_json::Value) {
    use serde_json::json;
    let mut st = state.lock().unwrap();
    let parts: Vec<&str> = url.trim_start_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["subjects", subject, "versions"]) => {
            let Ok(req) = serde_json::from_str::<serde_json::Value>(body) else {
                return (
                    422,
                    json!({"error_code": 42201, "message": "Invalid schema"}),
                );
            };
            let schema = req["schema"].as_str().unwrap_or_default().to_string();
            let kind = req["schemaType"].as_str().map(String::from);
            let existing = st
                .schemas
                .iter()
                .position(|(s, k)| *s == schema && *k == kind);
            let id = match existing {
                Some(i) => i as u32 + 1,
                None => {
                    st.schemas.push((schema, kind));
                    st.schemas.len() as u32
                }
            };
            st.subjects.entry(subject.to_string()).or_default().push(id);
            (200, json!({ "id": id }))
        }
        ("GET", ["schemas", "ids", id]) => {
            match id
                .parse::<usize>()
                .ok()
                .and_then(|i| st.schemas.get(i.wrapping_sub(1)))
            {
                Some((schema, kind)) => {
                    let mut r = json!({ "schema": schema });
                    if let Some(k) = kind {
                        r["schemaType"] = json!(k);
                    }
                    (200, r)
                }
                None => (
                    404,
                    json!({"error_code": 40403, "message": "Schema not found"}),
                ),
            }
        }
        _ => (
            404,
            json!({"error_code": 404, "message": "HTTP 404 Not Found"}),
        ),
    }
}

#[test]
fn the_registry_client_registers_fetches_and_caches() {
    let fake = FakeRegistry::start(None);
    let registry = SchemaRegistry::new(&fake.url).unwrap();
    let avro_id = registry
        .register("readings-value", SchemaKind::Avro, READING)
        .unwrap();
    let again = registry
        .register("readings-value", SchemaKind::Avro, READING)
        .unwrap();
    assert_eq!(avro_id, again);
    assert_eq!(fake.served(), 1, "the second registration was not cached");
    let proto_id = registry
        .register("orders-value", SchemaKind::Protobuf, ORDER_PROTO)
        .unwrap();
    assert_ne!(proto_id, avro_id);

    // A second client (another process, say) fetches by id, once per id.
    let reader = SchemaRegistry::new(&fake.url).unwrap();
    let before = fake.served();
    let s = reader.schema(proto_id).unwrap();
    assert_eq!(
        (s.kind, s.schema.as_str()),
        (SchemaKind::Protobuf, ORDER_PROTO)
    );
    assert_eq!(reader.schema(avro_id).unwrap().kind, SchemaKind::Avro);
    reader.schema(proto_id).unwrap();
    assert_eq!(fake.served() - before, 2);
    assert_eq!(reader.requests(), 2);

    let missing = reader.schema(999).unwrap_err().to_string();
    assert!(
        missing.contains("HTTP 404") && missing.contains("Schema not found"),
        "{missing}"
    );
}

#[test]
fn basic_authentication_is_sent_and_a_refusal_is_clear() {
    // "key:secret" in base64.
    let fake = FakeRegistry::start(Some("Basic a2V5OnNlY3JldA=="));
    let good = SchemaRegistry::with_config(RegistryConfig {
        url: fake.url.clone(),
        basic_auth: Some(("key".into(), "secret".into())),
        ..RegistryConfig::default()
    })
    .unwrap();
    good.register("s", SchemaKind::Avro, READING).unwrap();
    let bad = SchemaRegistry::with_config(RegistryConfig {
        url: fake.url.clone(),
        basic_auth: Some(("key".into(), "wrong".into())),
        ..RegistryConfig::default()
    })
    .unwrap();
    let e = bad
        .register("s", SchemaKind::Avro, READING)
        .unwrap_err()
        .to_string();
    assert!(e.contains("HTTP 401") && e.contains("Unauthorized"), "{e}");
    assert!(!e.contains("wrong"), "the error shows the password: {e}");

    let nobody = SchemaRegistry::new("http://127.0.0.1:1").unwrap();
    let e = nobody.schema(1).unwrap_err().to_string();
    assert!(
        e.starts_with("schema registry: GET http://127.0.0.1:1/schemas/ids/1"),
        "{e}"
    );
}

#[test]
fn avro_records_written_with_an_older_schema_decode_into_the_newer_one() {
    let fake = FakeRegistry::start(None);
    let registry = Arc::new(SchemaRegistry::new(&fake.url).unwrap());

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct V1 {
        device: String,
        value: f64,
    }
    const V1_SCHEMA: &str = r#"{"type":"record","name":"Reading","namespace":"freshet.test","fields":[
      {"name":"device","type":"string"},{"name":"value","type":"double"}]}"#;
    let old = ConfluentAvro::<V1>::register(registry.clone(), "readings-value", V1_SCHEMA).unwrap();
    let mut payload = Vec::new();
    old.encode(
        &V1 {
            device: "d".into(),
            value: 2.5,
        },
        &mut payload,
    )
    .unwrap();

    // A job reading with the newer schema (two more fields, with defaults) and its own
    // registry client: it fetches the writer schema by the payload's id, once.
    const V2: &str = r#"{"type":"record","name":"Reading","namespace":"freshet.test","fields":[
      {"name":"device","type":"string"},{"name":"value","type":"double"},
      {"name":"count","type":"long","default":0},
      {"name":"note","type":["null","string"],"default":null}]}"#;
    let reader_registry = Arc::new(SchemaRegistry::new(&fake.url).unwrap());
    let new = ConfluentAvro::<Reading>::decoder(reader_registry.clone(), V2).unwrap();
    let want = Reading {
        device: "d".into(),
        value: 2.5,
        count: 0,
        note: None,
    };
    for _ in 0..3 {
        assert_eq!(new.decode(&msg(&payload)).unwrap(), want);
    }
    assert_eq!(reader_registry.requests(), 1);

    // An id the registry does not know, and a non-Confluent payload, are decode errors.
    let mut unknown = payload.clone();
    unknown[1..5].copy_from_slice(&77u32.to_be_bytes());
    let e = new.decode(&msg(&unknown)).unwrap_err();
    assert!(e.contains("Schema not found"), "{e}");
    assert!(new
        .decode(&msg(b"{\"json\":1}"))
        .unwrap_err()
        .contains("magic byte"));
}
