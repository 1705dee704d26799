//! The bytes of keyed operators' checkpoint parts ([`LogPart`]), and how a chain of
//! them is replayed into state (on restore) or into one full part (compaction).
//!
//! Each entry's key and value are encoded on their own, with their lengths, so that a
//! chain can be replayed by key bytes without knowing the types: the writer thread
//! compacts any operator's chains, and a restore decodes only the entries that survive
//! the replay. The layout is bincode's for `(Option<u64>, u64, Vec<u8>, Vec<(Vec<u8>,
//! Option<Vec<u8>>)>)`: the base, the `from`, the encoded extra, and the encoded
//! entries. Equal keys must encode to equal bytes, which bincode does for every key
//! type an operator can exchange and hash (integers, strings, tuples, enums of them).

use std::io::{Error, Result};
use std::sync::Arc;

use rustc_hash::FxHashMap;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// One worker's part of a keyed operator's checkpoint, as a log of changes; written
/// and read as [`LogPart::encode`] and [`LogPart::decode`] say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogPart<E, K, V> {
    /// The epoch of the part (of the same operator and worker) this one changes;
    /// `None`: a full part, complete by itself.
    pub base: Option<u64>,
    /// The epoch of the oldest part a restore reads: this part and its bases back to
    /// that one together hold every live entry (the part's own epoch if it is full).
    pub from: u64,
    /// The operator's state that is not keyed (small, written whole in every part).
    pub extra: E,
    /// Entries changed since the base, in order (`None`: removed); every entry if full.
    pub entries: Vec<(K, Option<V>)>,
}

impl<E: Serialize, K: Serialize, V: Serialize> LogPart<E, K, V> {
    /// The part's bytes, as a store holds them.
    pub fn encode(&self) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + 48 * self.entries.len());
        header(&mut out, self.base, self.from);
        field(&mut out, &self.extra)?;
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (k, v) in &self.entries {
            field(&mut out, k)?;
            match v {
                None => out.push(0),
                Some(v) => {
                    out.push(1);
                    field(&mut out, v)?;
                }
            }
        }
        Ok(out)
    }
}

impl<E: DeserializeOwned, K: DeserializeOwned, V: DeserializeOwned> LogPart<E, K, V> {
    /// The part whose bytes (as [`LogPart::encode`] made them) are `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let raw = Raw::parse(bytes)?;
        let entries = raw.entries.iter().map(|(k, v)| {
            let v = v.map(|v| decode::<V>(v)).transpose()?;
            Ok((decode::<K>(k)?, v))
        });
        Ok(LogPart {
            base: raw.base,
            from: raw.from,
            extra: decode(raw.extra)?,
            entries: entries.collect::<Result<_>>()?,
        })
    }
}

/// Writes a part's base and `from`.
fn header(out: &mut Vec<u8>, base: Option<u64>, from: u64) {
    match base {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&b.to_le_bytes());
        }
    }
    out.extend_from_slice(&from.to_le_bytes());
}

/// Writes `value` encoded, after its length.
fn field<S: Serialize + ?Sized>(out: &mut Vec<u8>, value: &S) -> Result<()> {
    let at = out.len();
    out.extend_from_slice(&[0; 8]);
    bincode::serialize_into(&mut *out, value).map_err(Error::other)?;
    let len = (out.len() - at - 8) as u64;
    out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Writes `bytes`, already encoded, after their length (as [`field`] writes a value).
fn encoded(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// `bytes` decoded as an `S`.
fn decode<S: DeserializeOwned>(bytes: &[u8]) -> Result<S> {
    bincode::deserialize(bytes).map_err(Error::other)
}

/// A part's bytes, split into its fields without decoding keys, values or extra.
struct Raw<'a> {
    base: Option<u64>,
    from: u64,
    extra: &'a [u8],
    entries: Vec<(&'a [u8], Option<&'a [u8]>)>,
}

/// Reads a part's bytes front to back.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.0.len() < n {
            return Err(Error::other("checkpoint part ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64> {
        let bytes = self.take(8)?.try_into().expect("8 bytes");
        Ok(u64::from_le_bytes(bytes))
    }

    fn field(&mut self) -> Result<&'a [u8]> {
        let len = usize::try_from(self.u64()?).map_err(Error::other)?;
        self.take(len)
    }

    fn option(&mut self) -> Result<bool> {
        match self.byte()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(Error::other(format!("checkpoint part has option tag {b}"))),
        }
    }
}

impl<'a> Raw<'a> {
    /// The base and `from` of the part `bytes`.
    fn header(bytes: &'a [u8]) -> Result<(Option<u64>, u64, Cursor<'a>)> {
        let mut c = Cursor(bytes);
        let base = if c.option()? { Some(c.u64()?) } else { None };
        let from = c.u64()?;
        Ok((base, from, c))
    }

    fn parse(bytes: &'a [u8]) -> Result<Self> {
        let (base, from, mut c) = Self::header(bytes)?;
        let extra = c.field()?;
        let n = c.u64()?;
        // Each entry takes at least 9 bytes: no allocation beyond what the bytes hold.
        let mut entries = Vec::with_capacity((n as usize).min(c.0.len() / 9));
        for _ in 0..n {
            let k = c.field()?;
            let v = if c.option()? { Some(c.field()?) } else { None };
            entries.push((k, v));
        }
        if !c.0.is_empty() {
            return Err(Error::other("checkpoint part has bytes after its entries"));
        }
        Ok(Raw {
            base,
            from,
            extra,
            entries,
        })
    }
}

/// The bytes of the chain ending in `newest`, the part at `epoch`: it and its bases
/// back to its `from`, newest first. `read(at, image)` reads the part at epoch `at`,
/// or its image (the full part a compaction wrote for the chain ending there): a chain
/// starts at a full part, or at a part whose image it reads instead.
pub(crate) fn chain(
    epoch: u64,
    newest: Vec<u8>,
    mut read: impl FnMut(u64, bool) -> Result<Vec<u8>>,
) -> Result<Vec<Vec<u8>>> {
    let (mut base, from, _) = Raw::header(&newest)?;
    let mut at = epoch;
    let mut chain = vec![newest];
    loop {
        if at == from {
            if base.is_some() {
                let image = read(at, true)?;
                if Raw::header(&image)?.0.is_some() {
                    return Err(Error::other(format!(
                        "the image of checkpoint part {at} is not a full part"
                    )));
                }
                let last = chain.len() - 1;
                chain[last] = if last == 0 {
                    image
                } else {
                    without_extra(&image)?
                };
            }
            break;
        }
        match base {
            None => break,
            Some(b) if b < at && b >= from => at = b,
            Some(b) => {
                return Err(Error::other(format!(
                    "checkpoint part at epoch {at} names a base {b} outside its chain from {from}"
                )))
            }
        }
        let part = read(at, false)?;
        base = Raw::header(&part)?.0;
        chain.push(without_extra(&part)?);
    }
    Ok(chain)
}

/// `part` without its extra, which only the newest part of a chain is read for: an
/// operator's unkeyed state (records waiting for a watermark or a table) can be much
/// larger than its changes, and a chain holds up to `2 * full_every` parts.
fn without_extra(part: &[u8]) -> Result<Vec<u8>> {
    let (_, _, mut c) = Raw::header(part)?;
    let head = part.len() - c.0.len();
    c.field()?;
    let rest = c.0;
    let mut out = Vec::with_capacity(head + 8 + rest.len());
    out.extend_from_slice(&part[..head]);
    encoded(&mut out, &[]);
    out.extend_from_slice(rest);
    Ok(out)
}

/// The state `chain` (newest first) holds: the newest part's extra and every live
/// entry's last value, still encoded.
pub(crate) type Replayed<'a> = (&'a [u8], Vec<(&'a [u8], &'a [u8])>);

/// Replays `chain` (newest first, see [`chain`]) by key bytes.
pub(crate) fn replay(chain: &[Vec<u8>]) -> Result<Replayed<'_>> {
    let parts: Vec<Raw<'_>> = chain.iter().map(|p| Raw::parse(p)).collect::<Result<_>>()?;
    let extra = parts.first().map_or(&[][..], |p| p.extra);
    // The chain's start (a full part or an image) holds each key once: with nothing
    // changed after it, it is the state as it is (no map to build).
    if let [newer @ .., start] = &parts[..] {
        if newer.iter().all(|p| p.entries.is_empty()) {
            let entries = start.entries.iter().filter_map(|&(k, v)| Some((k, v?)));
            return Ok((extra, entries.collect()));
        }
    }
    let size = parts.last().map_or(0, |p| p.entries.len());
    let mut last: FxHashMap<&[u8], Option<&[u8]>> =
        FxHashMap::with_capacity_and_hasher(size, Default::default());
    // Newest first: a key's first entry seen is its last written, within a part too.
    for part in &parts {
        for &(k, v) in part.entries.iter().rev() {
            last.entry(k).or_insert(v);
        }
    }
    let entries = last.into_iter().filter_map(|(k, v)| Some((k, v?)));
    Ok((extra, entries.collect()))
}

/// Decodes a replayed chain's state.
pub(crate) fn decode_state<E, K, V>((extra, entries): Replayed<'_>) -> Result<(E, Vec<(K, V)>)>
where
    E: DeserializeOwned,
    K: DeserializeOwned,
    V: DeserializeOwned,
{
    let entries = entries
        .into_iter()
        .map(|(k, v)| Ok((decode(k)?, decode(v)?)))
        .collect::<Result<_>>()?;
    Ok((decode(extra)?, entries))
}

/// Which entries of a compacted part are live: given the newest extra's bytes, a test
/// of an entry's key bytes (see [`Live::of`]).
pub(crate) type Live =
    Arc<dyn Fn(&[u8]) -> Result<Box<dyn Fn(&[u8]) -> Result<bool>>> + Send + Sync>;

/// [`Live`] for an operator whose parts' extra is an `E` and keys are `K`: `live`.
pub(crate) fn live<E, K>(live: fn(&E, &K) -> bool) -> Live
where
    E: DeserializeOwned + 'static,
    K: DeserializeOwned + 'static,
{
    Arc::new(move |extra| {
        let extra: E = decode(extra)?;
        Ok(Box::new(move |key| Ok(live(&extra, &decode(key)?))))
    })
}

/// The full part at `epoch` that `chain` (newest first, see [`chain`]) stands for:
/// replayed, keeping the entries `live` says are (every one without it).
pub(crate) fn compact(epoch: u64, chain: &[Vec<u8>], live: Option<&Live>) -> Result<Vec<u8>> {
    let (extra, mut entries) = replay(chain)?;
    if let Some(live) = live {
        let keep = live(extra)?;
        let mut kept = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            if keep(k)? {
                kept.push((k, v));
            }
        }
        entries = kept;
    }
    let size: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 17).sum();
    let mut out = Vec::with_capacity(size + extra.len() + 32);
    header(&mut out, None, epoch);
    encoded(&mut out, extra);
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    for (k, v) in entries {
        encoded(&mut out, k);
        out.push(1);
        encoded(&mut out, v);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    type Part = LogPart<u32, String, (u8, u64)>;

    /// The layout is bincode's for the same fields with keys, values and extra as
    /// bytes: a part decodes back as written, and its head as `(base, from)`.
    #[test]
    fn a_part_decodes_as_written() {
        let part = Part {
            base: Some(7),
            from: 3,
            extra: 11,
            entries: vec![("a".into(), Some((1, 2))), ("bc".into(), None)],
        };
        let bytes = part.encode().unwrap();
        assert_eq!(Part::decode(&bytes).unwrap(), part);
        let head: (Option<u64>, u64) = bincode::deserialize(&bytes).unwrap();
        assert_eq!(head, (Some(7), 3));
        type AsBincode = (Option<u64>, u64, Vec<u8>, Vec<(Vec<u8>, Option<Vec<u8>>)>);
        let whole: AsBincode = bincode::deserialize(&bytes).unwrap();
        assert_eq!(whole.3.len(), 2);
        assert!(Part::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// A chain replays newest first: a key's last entry wins, within a part too, and a
    /// removal removes it; the newest extra is kept.
    #[test]
    fn a_chain_replays_to_each_keys_last_value() {
        let part = |base, extra, entries: &[(&str, Option<(u8, u64)>)]| {
            let entries = entries.iter().map(|(k, v)| (k.to_string(), *v)).collect();
            Part {
                base,
                from: 1,
                extra,
                entries,
            }
            .encode()
            .unwrap()
        };
        let full = part(None, 1, &[("a", Some((1, 1))), ("b", Some((2, 2)))]);
        let second = part(Some(1), 2, &[("b", None), ("c", Some((3, 3)))]);
        let third = part(Some(2), 3, &[("a", Some((1, 5))), ("a", Some((1, 6)))]);
        let stored = [(1, full), (2, second)];
        let read = |at, image: bool| {
            assert!(!image, "the chain starts at a full part");
            Ok(stored.iter().find(|(e, _)| *e == at).unwrap().1.clone())
        };
        let chain = chain(3, third, read).unwrap();
        assert_eq!(chain.len(), 3);
        type State = (u32, Vec<(String, (u8, u64))>);
        let (extra, mut entries): State = decode_state(replay(&chain).unwrap()).unwrap();
        entries.sort();
        assert_eq!(extra, 3);
        assert_eq!(entries, vec![("a".into(), (1, 6)), ("c".into(), (3, 3))]);
    }
}
