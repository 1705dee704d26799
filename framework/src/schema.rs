//! Schema'd payloads: Protocol Buffers ([`Protobuf`], prost messages) and Avro
//! ([`Avro`], serde types against an Avro schema), each also in the Confluent Schema
//! Registry wire format ([`ConfluentProtobuf`], [`ConfluentAvro`]): a magic byte `0`,
//! the schema's 4-byte big-endian registry id, (Protobuf only) the message-index path,
//! then the payload — what Confluent's serializers in every language write and read.
//!
//! A payload that does not decode, a wrong magic byte or an unknown schema id is a
//! decode error (the record goes to the source's error stream), never a panic.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::{Arc, RwLock};

use apache_avro::Schema as AvroSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::codec::{Decoder, Encoder, RawMessage};
use crate::error::{Error, Result};
use crate::registry::{SchemaKind, SchemaRegistry};

/// Protocol Buffers payloads through prost (`#[derive(prost::Message)]` or
/// prost-build generated types).
pub struct Protobuf<T>(PhantomData<fn() -> T>);

impl<T> Protobuf<T> {
    /// The Protobuf codec for `T`.
    pub fn new() -> Self {
        Protobuf(PhantomData)
    }
}

impl<T> Default for Protobuf<T> {
    fn default() -> Self {
        Protobuf::new()
    }
}

impl<T> Clone for Protobuf<T> {
    fn clone(&self) -> Self {
        Protobuf::new()
    }
}

impl<T: prost::Message + Default + 'static> Decoder for Protobuf<T> {
    type Output = T;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<T, String> {
        T::decode(msg.payload()?).map_err(|e| format!("protobuf: {e}"))
    }
}

impl<T: prost::Message + 'static> Encoder<T> for Protobuf<T> {
    fn encode(&self, item: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        item.encode(buf).map_err(|e| format!("protobuf: {e}"))
    }
}

/// Avro binary payloads (no container header) for a serde type, against one schema.
pub struct Avro<T> {
    schema: Arc<AvroSchema>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Avro<T> {
    fn clone(&self) -> Self {
        Avro {
            schema: self.schema.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> Avro<T> {
    /// The Avro codec for `T` with `schema` (Avro JSON schema text).
    pub fn new(schema: &str) -> Result<Self> {
        Ok(Avro {
            schema: Arc::new(parse_avro(schema)?),
            _t: PhantomData,
        })
    }

    /// The parsed schema.
    pub fn schema(&self) -> &AvroSchema {
        &self.schema
    }
}

fn parse_avro(schema: &str) -> Result<AvroSchema> {
    AvroSchema::parse_str(schema).map_err(|e| Error::Config(format!("Avro schema: {e}")))
}

/// Decodes one Avro datum written with `writer` into `T`, resolved against `reader`
/// when it differs; the whole payload must be consumed.
fn avro_decode<T: DeserializeOwned>(
    writer: &AvroSchema,
    reader: Option<&AvroSchema>,
    mut payload: &[u8],
) -> Result<T, String> {
    let value = apache_avro::from_avro_datum(writer, &mut payload, reader)
        .map_err(|e| format!("avro: {e}"))?;
    if !payload.is_empty() {
        return Err(format!(
            "avro: {} bytes left after the record",
            payload.len()
        ));
    }
    apache_avro::from_value(&value).map_err(|e| format!("avro: {e}"))
}

fn avro_encode<T: Serialize>(
    schema: &AvroSchema,
    item: &T,
    buf: &mut Vec<u8>,
) -> Result<(), String> {
    apache_avro::write_avro_datum_ref(schema, item, buf)
        .map(|_| ())
        .map_err(|e| format!("avro: {e}"))
}

impl<T: DeserializeOwned + 'static> Decoder for Avro<T> {
    type Output = T;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<T, String> {
        avro_decode(&self.schema, None, msg.payload()?)
    }
}

impl<T: Serialize + 'static> Encoder<T> for Avro<T> {
    fn encode(&self, item: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        avro_encode(&self.schema, item, buf)
    }
}

/// The magic byte that starts every Confluent wire-format payload.
pub const MAGIC: u8 = 0;

/// Splits a Confluent wire-format payload into its schema id and the rest.
pub fn split_confluent(payload: &[u8]) -> Result<(u32, &[u8]), String> {
    match payload {
        [MAGIC, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [m, ..] if *m != MAGIC => Err(format!(
            "not the Confluent wire format: magic byte {m}, expected 0"
        )),
        _ => Err(format!(
            "not the Confluent wire format: {} bytes, shorter than the 5-byte header",
            payload.len()
        )),
    }
}

/// Writes the Confluent wire-format header (magic byte and schema id).
pub fn write_confluent_header(id: u32, buf: &mut Vec<u8>) {
    buf.push(MAGIC);
    buf.extend_from_slice(&id.to_be_bytes());
}

/// Reads the Protobuf message-index path that follows the header (zigzag varints: a
/// count, then the indexes; a single `0` means `[0]`, the file's first message).
pub fn read_message_indexes(mut rest: &[u8]) -> Result<(Vec<i32>, &[u8]), String> {
    let count = read_zigzag(&mut rest)?;
    if count == 0 {
        return Ok((vec![0], rest));
    }
    if !(0..=100).contains(&count) {
        return Err(format!(
            "protobuf message-index count {count} is out of range"
        ));
    }
    let mut path = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let i = read_zigzag(&mut rest)?;
        path.push(i32::try_from(i).map_err(|_| format!("message index {i} is out of range"))?);
    }
    Ok((path, rest))
}

/// Writes a Protobuf message-index path (`[0]` as the single byte 0).
pub fn write_message_indexes(path: &[i32], buf: &mut Vec<u8>) {
    if path == [0] {
        buf.push(0);
        return;
    }
    write_zigzag(path.len() as i64, buf);
    for &i in path {
        write_zigzag(i as i64, buf);
    }
}

fn read_zigzag(rest: &mut &[u8]) -> Result<i64, String> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let (&b, tail) = rest
            .split_first()
            .ok_or("protobuf message indexes: the payload ends inside a varint")?;
        *rest = tail;
        v |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            return Ok((v >> 1) as i64 ^ -((v & 1) as i64));
        }
    }
    Err("protobuf message indexes: a varint longer than 10 bytes".into())
}

fn write_zigzag(v: i64, buf: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let b = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            buf.push(b);
            return;
        }
        buf.push(b | 0x80);
    }
}

/// Protobuf in the Confluent wire format.
///
/// Decoding reads the header and the message-index path and decodes the payload as
/// `T` (the schema id is checked only against [`ConfluentProtobuf::expect_ids`], when
/// set: prost types carry no descriptor to compare with the registry's). Encoding writes
/// the id the schema was registered under and the message-index path.
pub struct ConfluentProtobuf<T> {
    id: Option<u32>,
    path: Vec<i32>,
    expect: Option<Arc<[u32]>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ConfluentProtobuf<T> {
    fn clone(&self) -> Self {
        ConfluentProtobuf {
            id: self.id,
            path: self.path.clone(),
            expect: self.expect.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> ConfluentProtobuf<T> {
    /// A decoder accepting any schema id.
    pub fn decoder() -> Self {
        ConfluentProtobuf {
            id: None,
            path: vec![0],
            expect: None,
            _t: PhantomData,
        }
    }

    /// A codec that writes schema id `id` (already registered) and message path `[0]`.
    pub fn with_id(id: u32) -> Self {
        ConfluentProtobuf {
            id: Some(id),
            ..ConfluentProtobuf::decoder()
        }
    }

    /// Registers `proto` (the `.proto` source whose message `path` — `[0]` for the
    /// file's first message — is `T`) under `subject` (e.g. `orders-value`) and returns
    /// a codec writing its id.
    pub fn register(
        registry: &SchemaRegistry,
        subject: &str,
        proto: &str,
        path: &[i32],
    ) -> Result<Self> {
        let id = registry.register(subject, SchemaKind::Protobuf, proto)?;
        Ok(ConfluentProtobuf {
            path: path.to_vec(),
            ..ConfluentProtobuf::with_id(id)
        })
    }

    /// Refuses, when decoding, payloads whose schema id is not one of `ids`.
    pub fn expect_ids(mut self, ids: &[u32]) -> Self {
        self.expect = Some(ids.into());
        self
    }
}

impl<T: prost::Message + Default + 'static> Decoder for ConfluentProtobuf<T> {
    type Output = T;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<T, String> {
        let (id, rest) = split_confluent(msg.payload()?)?;
        if let Some(ids) = &self.expect {
            if !ids.contains(&id) {
                return Err(format!("schema id {id} is not one this decoder accepts"));
            }
        }
        let (_path, body) = read_message_indexes(rest)?;
        T::decode(body).map_err(|e| format!("protobuf (schema id {id}): {e}"))
    }
}

impl<T: prost::Message + 'static> Encoder<T> for ConfluentProtobuf<T> {
    fn encode(&self, item: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        let id = self
            .id
            .ok_or("this ConfluentProtobuf has no schema id to write (use register or with_id)")?;
        write_confluent_header(id, buf);
        write_message_indexes(&self.path, buf);
        item.encode(buf).map_err(|e| format!("protobuf: {e}"))
    }
}

/// Avro in the Confluent wire format.
///
/// Decoding looks the writer's schema up by the payload's id (through the registry,
/// cached) and resolves it against the reader schema, so records written with an
/// older or newer compatible schema decode into `T`. Encoding writes the id the reader
/// schema was registered under.
pub struct ConfluentAvro<T> {
    reader: Arc<AvroSchema>,
    id: Option<u32>,
    registry: Option<Arc<SchemaRegistry>>,
    writers: Arc<RwLock<HashMap<u32, Arc<AvroSchema>>>>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for ConfluentAvro<T> {
    fn clone(&self) -> Self {
        ConfluentAvro {
            reader: self.reader.clone(),
            id: self.id,
            registry: self.registry.clone(),
            writers: self.writers.clone(),
            _t: PhantomData,
        }
    }
}

impl<T> ConfluentAvro<T> {
    /// A decoder reading into `schema` (Avro JSON), fetching writer schemas by id from
    /// `registry`.
    pub fn decoder(registry: Arc<SchemaRegistry>, schema: &str) -> Result<Self> {
        Ok(ConfluentAvro {
            reader: Arc::new(parse_avro(schema)?),
            id: None,
            registry: Some(registry),
            writers: Arc::default(),
            _t: PhantomData,
        })
    }

    /// Registers `schema` under `subject` (e.g. `orders-value`); the codec writes its id
    /// and decodes as [`ConfluentAvro::decoder`] does.
    pub fn register(registry: Arc<SchemaRegistry>, subject: &str, schema: &str) -> Result<Self> {
        let mut codec = ConfluentAvro::decoder(registry.clone(), schema)?;
        let id = registry.register(subject, SchemaKind::Avro, schema)?;
        codec.id = Some(id);
        codec
            .writers
            .write()
            .map_err(|_| Error::Registry("cache lock poisoned".into()))?
            .insert(id, codec.reader.clone());
        Ok(codec)
    }

    /// A codec without a registry: schema `schema` is id `id`, the only id it reads.
    pub fn with_id(id: u32, schema: &str) -> Result<Self> {
        let reader = Arc::new(parse_avro(schema)?);
        let writers = HashMap::from([(id, reader.clone())]);
        Ok(ConfluentAvro {
            reader,
            id: Some(id),
            registry: None,
            writers: Arc::new(RwLock::new(writers)),
            _t: PhantomData,
        })
    }

    /// The writer schema with registry id `id`.
    fn writer(&self, id: u32) -> Result<Arc<AvroSchema>, String> {
        if let Some(s) = self.writers.read().ok().and_then(|m| m.get(&id).cloned()) {
            return Ok(s);
        }
        let registry = self
            .registry
            .as_ref()
            .ok_or_else(|| format!("unknown schema id {id} (no registry to ask)"))?;
        let registered = registry.schema(id).map_err(|e| e.to_string())?;
        if registered.kind != SchemaKind::Avro {
            return Err(format!(
                "schema id {id} is a {:?} schema, not Avro",
                registered.kind
            ));
        }
        let schema = Arc::new(
            AvroSchema::parse_str(&registered.schema)
                .map_err(|e| format!("schema id {id} from the registry: {e}"))?,
        );
        if let Ok(mut m) = self.writers.write() {
            m.insert(id, schema.clone());
        }
        Ok(schema)
    }
}

impl<T: DeserializeOwned + 'static> Decoder for ConfluentAvro<T> {
    type Output = T;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<T, String> {
        let (id, body) = split_confluent(msg.payload()?)?;
        let writer = self.writer(id)?;
        let reader = (!Arc::ptr_eq(&writer, &self.reader) && *writer != *self.reader)
            .then_some(&*self.reader);
        avro_decode(&writer, reader, body).map_err(|e| format!("{e} (schema id {id})"))
    }
}

impl<T: Serialize + 'static> Encoder<T> for ConfluentAvro<T> {
    fn encode(&self, item: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        let id = self
            .id
            .ok_or("this ConfluentAvro has no schema id to write (use register or with_id)")?;
        write_confluent_header(id, buf);
        avro_encode(&self.reader, item, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[derive(Clone, PartialEq, prost::Message)]
    struct Order {
        #[prost(uint64, tag = "1")]
        id: u64,
        #[prost(string, tag = "2")]
        item: String,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reading {
        device: String,
        value: f64,
        note: Option<String>,
    }

    const READING: &str = r#"{"type":"record","name":"Reading","fields":[
        {"name":"device","type":"string"},{"name":"value","type":"double"},
        {"name":"note","type":["null","string"],"default":null}]}"#;

    #[test]
    fn protobuf_round_trip_and_garbage() {
        let codec = Protobuf::<Order>::new();
        let order = Order {
            id: 7,
            item: "x".into(),
        };
        let mut buf = Vec::new();
        codec.encode(&order, &mut buf).unwrap();
        assert_eq!(buf, [0x08, 7, 0x12, 1, b'x']);
        assert_eq!(codec.decode(&msg(&buf)).unwrap(), order);
        assert!(codec
            .decode(&msg(&[0x12, 9]))
            .unwrap_err()
            .starts_with("protobuf:"));
    }

    #[test]
    fn avro_round_trip_and_garbage() {
        let codec = Avro::<Reading>::new(READING).unwrap();
        let r = Reading {
            device: "d1".into(),
            value: 1.5,
            note: Some("n".into()),
        };
        let mut buf = Vec::new();
        codec.encode(&r, &mut buf).unwrap();
        assert_eq!(codec.decode(&msg(&buf)).unwrap(), r);
        let mut long = buf.clone();
        long.push(1);
        assert!(codec
            .decode(&msg(&long))
            .unwrap_err()
            .contains("left after"));
        assert!(codec
            .decode(&msg(&buf[..3]))
            .unwrap_err()
            .starts_with("avro:"));
        assert!(Avro::<Reading>::new("{nope").is_err());
    }

    #[test]
    fn confluent_framing() {
        assert_eq!(
            split_confluent(&[0, 0, 0, 1, 2, 9]).unwrap(),
            (258, &[9][..])
        );
        assert!(split_confluent(&[1, 0, 0, 0, 1])
            .unwrap_err()
            .contains("magic byte 1"));
        assert!(split_confluent(&[0, 0]).unwrap_err().contains("shorter"));
        for path in [vec![0], vec![1], vec![0, 2], vec![3, 0, 70]] {
            let mut buf = Vec::new();
            write_message_indexes(&path, &mut buf);
            buf.push(42);
            let (got, rest) = read_message_indexes(&buf).unwrap();
            assert_eq!((got, rest), (path.clone(), &[42][..]));
        }
        let mut buf = Vec::new();
        write_message_indexes(&[1], &mut buf);
        assert_eq!(buf, [2, 2]);
        assert!(read_message_indexes(&[0x80]).is_err());
        assert!(read_message_indexes(&[]).is_err());
    }

    #[test]
    fn confluent_codecs_without_a_registry() {
        let codec = ConfluentAvro::<Reading>::with_id(5, READING).unwrap();
        let r = Reading {
            device: "d".into(),
            value: -2.0,
            note: None,
        };
        let mut buf = Vec::new();
        codec.encode(&r, &mut buf).unwrap();
        assert_eq!(&buf[..5], &[0, 0, 0, 0, 5]);
        assert_eq!(codec.decode(&msg(&buf)).unwrap(), r);
        buf[4] = 6;
        assert!(codec
            .decode(&msg(&buf))
            .unwrap_err()
            .contains("unknown schema id 6"));

        let proto = ConfluentProtobuf::<Order>::with_id(9).expect_ids(&[9]);
        let order = Order {
            id: 1,
            item: "y".into(),
        };
        let mut buf = Vec::new();
        proto.encode(&order, &mut buf).unwrap();
        assert_eq!(&buf[..6], &[0, 0, 0, 0, 9, 0]);
        assert_eq!(proto.decode(&msg(&buf)).unwrap(), order);
        buf[4] = 8;
        assert!(proto
            .decode(&msg(&buf))
            .unwrap_err()
            .contains("schema id 8"));
        assert!(ConfluentProtobuf::<Order>::decoder()
            .encode(&order, &mut Vec::new())
            .is_err());
    }
}
