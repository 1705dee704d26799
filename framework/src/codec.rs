//! Turning Kafka payloads into records and records into payloads.
//!
//! A [`Decoder`] sees the whole message (key, payload, partition, offset) and returns
//! a record or a reason; a failure becomes an error record on the source's error
//! stream, never a panic. Two codecs are here: [`Json`] (serde_json) and [`Bincode`]
//! (compact binary, Rust only); Protobuf and Avro, plain and in the Confluent Schema
//! Registry wire format, are in [`crate::schema`]. [`WithMeta`] wraps any decoder to
//! keep the message's coordinates.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A message as read from Kafka, borrowed from the client's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawMessage<'a> {
    /// Topic it was read from.
    pub topic: &'a str,
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The message key, if any.
    pub key: Option<&'a [u8]>,
    /// The message value, if any (a tombstone has none).
    pub payload: Option<&'a [u8]>,
    /// The message timestamp in ms since the Unix epoch, if the broker gave one.
    pub timestamp: Option<i64>,
}

impl<'a> RawMessage<'a> {
    /// The payload, or an error naming the null payload.
    pub fn payload(&self) -> Result<&'a [u8], String> {
        self.payload
            .ok_or_else(|| "null payload (tombstone)".to_string())
    }
}

/// Decodes a Kafka message into a record.
pub trait Decoder: Clone + Send + Sync + 'static {
    /// The record type.
    type Output;
    /// Decodes `msg`, or says why it cannot be decoded.
    fn decode(&self, msg: &RawMessage<'_>) -> Result<Self::Output, String>;
}

/// Encodes a record into a Kafka payload.
pub trait Encoder<D>: Clone + Send + Sync + 'static {
    /// Appends the encoding of `item` to `buf`.
    fn encode(&self, item: &D, buf: &mut Vec<u8>) -> Result<(), String>;
}

/// JSON payloads through serde_json.
pub struct Json<T>(PhantomData<fn() -> T>);

impl<T> Json<T> {
    /// The JSON codec for `T`.
    pub fn new() -> Self {
        Json(PhantomData)
    }
}

impl<T> Default for Json<T> {
    fn default() -> Self {
        Json::new()
    }
}

impl<T> Clone for Json<T> {
    fn clone(&self) -> Self {
        Json::new()
    }
}

impl<T: DeserializeOwned + 'static> Decoder for Json<T> {
    type Output = T;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<T, String> {
        serde_json::from_slice(msg.payload()?).map_err(|e| format!("json: {e}"))
    }
}

impl<T: Serialize + 'static> Encoder<T> for Json<T> {
    fn encode(&self, item: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        serde_json::to_writer(buf, item).map_err(|e| format!("json: {e}"))
    }
}

/// Compact binary payloads through bincode (fixed layout, little endian).
pub struct Bincode<T>(PhantomData<fn() -> T>);

impl<T> Bincode<T> {
    /// The binary codec for `T`.
    pub fn new() -> Self {
        Bincode(PhantomData)
    }
}

impl<T> Default for Bincode<T> {
    fn default() -> Self {
        Bincode::new()
    }
}

impl<T> Clone for Bincode<T> {
    fn clone(&self) -> Self {
        Bincode::new()
    }
}

impl<T: DeserializeOwned + 'static> Decoder for Bincode<T> {
    type Output = T;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<T, String> {
        bincode::deserialize(msg.payload()?).map_err(|e| format!("bincode: {e}"))
    }
}

impl<T: Serialize + 'static> Encoder<T> for Bincode<T> {
    fn encode(&self, item: &T, buf: &mut Vec<u8>) -> Result<(), String> {
        bincode::serialize_into(buf, item).map_err(|e| format!("bincode: {e}"))
    }
}

/// Raw bytes: the payload as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes;

impl Decoder for Bytes {
    type Output = Vec<u8>;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<Vec<u8>, String> {
        Ok(msg.payload()?.to_vec())
    }
}

/// A decoded record with the coordinates of the message it came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Meta<T> {
    /// Partition it was read from.
    pub partition: i32,
    /// Its offset in the partition.
    pub offset: i64,
    /// The message key, if any.
    pub key: Option<Vec<u8>>,
    /// The decoded value.
    pub value: T,
}

/// Wraps a decoder to keep each record's partition, offset and key ([`Meta`]).
#[derive(Clone, Debug, Default)]
pub struct WithMeta<C>(pub C);

impl<C: Decoder> Decoder for WithMeta<C> {
    type Output = Meta<C::Output>;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<Self::Output, String> {
        Ok(Meta {
            partition: msg.partition,
            offset: msg.offset,
            key: msg.key.map(<[u8]>::to_vec),
            value: self.0.decode(msg)?,
        })
    }
}

/// A record of a table topic (e.g. compacted): its key, and its value or `None` for a
/// tombstone (a null payload), which deletes the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Upsert<T> {
    /// The message key (required: a table row without a key cannot be applied).
    pub key: Vec<u8>,
    /// The decoded value; `None` for a tombstone.
    pub value: Option<T>,
    /// The message timestamp, ms (a tombstone's only time).
    pub timestamp: Option<u64>,
}

/// Decodes a table topic: a payload with the inner decoder, a null payload as a
/// tombstone ([`Upsert::value`] `None`) instead of an error. Joined with
/// [`crate::operators::Lookup::lookup_upserts_with`] as a table of `(key,
/// Option<value>)`, a tombstone makes the key absent for records at or after its event
/// time. Take event time with
/// `.event_time(|u| u.value.as_ref().map(..).or(u.timestamp))` so tombstones have one.
#[derive(Clone, Debug, Default)]
pub struct Upserts<C>(pub C);

impl<C: Decoder> Decoder for Upserts<C> {
    type Output = Upsert<C::Output>;
    fn decode(&self, msg: &RawMessage<'_>) -> Result<Self::Output, String> {
        let key = msg
            .key
            .ok_or_else(|| "table record without a key".to_string())?
            .to_vec();
        let value = match msg.payload {
            None => None,
            Some(_) => Some(self.0.decode(msg)?),
        };
        let timestamp = msg.timestamp.and_then(|t| u64::try_from(t).ok());
        Ok(Upsert {
            key,
            value,
            timestamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(payload: Option<&[u8]>) -> RawMessage<'_> {
        RawMessage {
            topic: "t",
            partition: 1,
            offset: 7,
            key: None,
            payload,
            timestamp: None,
        }
    }

    #[test]
    fn upserts_turn_null_payloads_into_tombstones() {
        let codec = Upserts(Json::<u32>::new());
        let mut m = msg(Some(b"7"));
        m.key = Some(b"k");
        assert_eq!(codec.decode(&m).unwrap().value, Some(7));
        m.payload = None;
        let t = codec.decode(&m).unwrap();
        assert_eq!((t.key, t.value), (b"k".to_vec(), None));
        m.key = None;
        assert!(codec.decode(&m).unwrap_err().contains("without a key"));
    }

    #[test]
    fn json_round_trip_and_errors() {
        let codec = Json::<(u32, String)>::new();
        let mut buf = Vec::new();
        codec.encode(&(3, "x".into()), &mut buf).unwrap();
        assert_eq!(
            codec.decode(&msg(Some(&buf))).unwrap(),
            (3, "x".to_string())
        );
        assert!(codec
            .decode(&msg(Some(b"{nope")))
            .unwrap_err()
            .starts_with("json:"));
        assert!(codec
            .decode(&msg(None))
            .unwrap_err()
            .contains("null payload"));
    }

    #[test]
    fn bincode_round_trip_and_errors() {
        let codec = Bincode::<(u64, i32)>::new();
        let mut buf = Vec::new();
        codec.encode(&(9, -2), &mut buf).unwrap();
        assert_eq!(codec.decode(&msg(Some(&buf))).unwrap(), (9, -2));
        assert!(codec.decode(&msg(Some(&buf[..3]))).is_err());
    }

    #[test]
    fn with_meta_keeps_coordinates() {
        let m = WithMeta(Json::<u8>::new())
            .decode(&msg(Some(b"5")))
            .unwrap();
        assert_eq!((m.partition, m.offset, m.value), (1, 7, 5));
    }
}
