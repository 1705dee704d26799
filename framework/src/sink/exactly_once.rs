//! Exactly-once output for the Kafka sink: results wait in the sink's checkpoint part
//! until their checkpoint is complete, and a restarted sink skips what it finds
//! already written.
//!
//! With `--exactly-once` a Kafka sink does not produce a record when it arrives. It
//! keeps it until the input frontier seals the next checkpoint epoch `C`, gives it an
//! identity ([`Id`]: `C`, the worker, a sequence number) and writes it into its own
//! checkpoint part, like any stateful operator. Only once the manifest of `C` is
//! written (the checkpoint is complete) are the records of `C` produced, each with its
//! identity in the `freshet.id` header and the job's group and sink in
//! `freshet.writer`; a delivered record leaves the sink's state (a tombstone in its
//! next part).
//!
//! So every record in the topic belongs to a complete checkpoint, and a restart
//! restores a checkpoint at least that new: its records are never computed again (the
//! restored operators' state already holds them). What the restored part still holds
//! are the records that were not known delivered when it was taken; some may have been
//! written before the crash. Before producing any of them the restarted sink reads its
//! topic back from where they can be (per partition, after the last record it had seen
//! delivered when the part was taken: the producer is idempotent, so what was
//! undelivered then lands after that) and skips every identity it finds.
//!
//! Nothing depends on replaying the input the same way (no recorded epochs, no
//! deterministic operators needed), and rescaling works: restored records are shared
//! among the new workers by their Kafka key. The cost is latency (a result is written
//! about one checkpoint interval after it is computed) and checkpoint size (the
//! results of one interval sit in the sink's part).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::Capability;
use timely::progress::frontier::MutableAntichain;
use timely::scheduling::SyncActivator;

use freshet_operators::checkpoint::{Aligner, Checkpoints};
use freshet_operators::hash::hash;

use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::source::{SourceConsumer, SourceContext};
use crate::time::Time;

/// The header naming the job (consumer group) and sink that wrote a record.
pub const WRITER_HEADER: &str = "freshet.writer";
/// The header carrying a record's [`Id`].
pub const ID_HEADER: &str = "freshet.id";

/// The checkpoint of records written when a bounded run's input ended (in no part).
const AT_END: u64 = u64::MAX;

/// How long a restarted sink reads its topic back before it gives up (and fails).
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(120);

/// A result's identity: the checkpoint whose part first held it, the worker that wrote
/// that part, and its place in it. Unique in the topic: a run's checkpoints come after
/// every part already in the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Id {
    /// The checkpoint epoch.
    pub checkpoint: u64,
    /// The worker.
    pub worker: u32,
    /// The sequence number among that worker's records of that checkpoint.
    pub seq: u64,
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.checkpoint, self.worker, self.seq)
    }
}

impl std::str::FromStr for Id {
    type Err = ();
    fn from_str(s: &str) -> std::result::Result<Id, ()> {
        let mut parts = s.split('.').map(str::parse::<u64>);
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Ok(checkpoint)), Some(Ok(worker)), Some(Ok(seq)), None) => Ok(Id {
                checkpoint,
                worker: u32::try_from(worker).map_err(|_| ())?,
                seq,
            }),
            _ => Err(()),
        }
    }
}

/// An encoded record waiting to be written.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Held {
    /// The Kafka key.
    pub key: Option<Vec<u8>>,
    /// The encoded value.
    pub payload: Vec<u8>,
    /// The sink's own headers for it (names borrowed from the sink's header function
    /// while live, owned once restored).
    pub headers: Vec<(Cow<'static, str>, String)>,
    /// Its event time (for the latency metric).
    pub event: u64,
}

impl Held {
    /// The sink's own headers for it, if it has any.
    pub fn own_headers(&self) -> Option<OwnedHeaders> {
        (!self.headers.is_empty()).then(|| self.with_headers(OwnedHeaders::new()))
    }

    /// `headers` followed by the sink's own headers.
    fn with_headers(&self, headers: OwnedHeaders) -> OwnedHeaders {
        self.headers.iter().fold(headers, |h, (k, v)| {
            h.insert(Header {
                key: k,
                value: Some(v),
            })
        })
    }
}

/// Per partition of the sink's topic: where a restarted sink starts reading back.
type ReadFrom = BTreeMap<i32, i64>;

/// What a part holds besides its records: where to read back from, and the next
/// sequence number (a restarted worker numbers on from the greatest).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Extra {
    read_from: ReadFrom,
    next_seq: u64,
}

/// Where a record stands in the order records are written: arrival order on one
/// worker (sequence numbers grow across restarts), then the worker.
type Order = (u64, u32);

fn order(id: &Id) -> Order {
    (id.seq, id.worker)
}

/// What a restarted sink did with the records its restored part held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Still to be written.
    pub pending: usize,
    /// Found already written, so skipped.
    pub skipped: usize,
    /// Records of this sink in the topic from checkpoints newer than the restored one.
    pub anomalies: usize,
}

/// One worker's exactly-once state of a Kafka sink.
///
/// Records are written in the order they arrived (a later record is never written
/// before an earlier one, whatever their epochs): a record waits for its own
/// checkpoint and for every record that arrived before it.
pub struct Staging {
    aligner: Aligner<Time, ()>,
    worker: u32,
    /// The `freshet.writer` header: the job's group and the sink.
    writer: String,
    /// Records not in a part yet, in arrival order: `(epoch, seq, record)`.
    staged: VecDeque<(u64, u64, Held)>,
    /// Per epoch of staged records, a capability at their least time.
    caps: BTreeMap<u64, Capability<Time>>,
    /// Records in a part and not yet delivered, in write order.
    live: BTreeMap<Order, (Id, Held)>,
    /// Changes to `live` since the last part (`None`: delivered).
    changes: Vec<(Id, Option<Held>)>,
    /// The last record handed to the producer (records up to it were, in order).
    released: Option<Order>,
    /// Delivery opaques of records handed to the producer.
    in_flight: HashMap<usize, Order>,
    next_opaque: usize,
    read_from: ReadFrom,
    next_seq: u64,
    /// Once the input is done: held until every record is delivered.
    keep: Option<Capability<Time>>,
    ended: bool,
}

impl Staging {
    /// The state of sink `name` on this worker, holding `cap` (the acknowledgement
    /// stream's initial capability); restores the sink's part and reads `topic` back
    /// for the records of it already written.
    pub fn new(
        ctx: Checkpoints,
        name: &str,
        cap: Capability<Time>,
        wake: SyncActivator,
        kafka: &KafkaConfig,
        topic: &str,
        writer: &str,
    ) -> Result<(Self, Restored)> {
        let worker = ctx.worker() as u32;
        let aligner = Aligner::new(ctx.clone(), name, &cap).waking(wake);
        let mut staging = Staging {
            aligner,
            worker,
            writer: writer.to_string(),
            staged: VecDeque::new(),
            caps: BTreeMap::new(),
            live: BTreeMap::new(),
            changes: Vec::new(),
            released: None,
            in_flight: HashMap::new(),
            next_opaque: 0,
            read_from: ReadFrom::new(),
            next_seq: 0,
            keep: Some(cap),
            ended: false,
        };
        let mut report = Restored::default();
        let restored = staging.aligner.restored_log::<Extra, Id, Held>();
        let Some((after, parts)) = restored.filter(|(_, parts)| !parts.is_empty()) else {
            staging.read_from = high_watermarks(kafka, topic)?;
            return Ok((staging, report));
        };
        let restored_epoch = after - 1;
        // Where any of them can be: before the least offset any old worker had seen
        // delivered past.
        for (extra, _) in &parts {
            staging.next_seq = staging.next_seq.max(extra.next_seq);
            for (&p, &o) in &extra.read_from {
                let at = staging.read_from.entry(p).or_insert(o);
                *at = (*at).min(o);
            }
        }
        // At the same worker count a worker writes what it held before: the upstream
        // operators route each key to the same worker again, so its restored records
        // and its new ones of a key are written by one worker, in arrival order. At
        // another count, restored records are shared out by their key.
        let same_scale = ctx.restored_at_same_scale();
        let owned = |(id, held): &(Id, Held)| match same_scale {
            true => id.worker as usize == ctx.worker(),
            false => ctx.owns(owner_hash(id, held)),
        };
        let mine: Vec<(Id, Held)> = parts
            .into_iter()
            .flat_map(|(_, entries)| entries)
            .filter(owned)
            .collect();
        let written = read_back(kafka, topic, writer, &staging.read_from)?;
        report.anomalies = written
            .iter()
            .filter(|id| id.checkpoint > restored_epoch && id.checkpoint != AT_END)
            .count();
        for (id, held) in mine {
            if written.contains(&id) {
                report.skipped += 1;
            } else {
                staging.live.insert(order(&id), (id, held));
            }
        }
        report.pending = staging.live.len();
        Ok((staging, report))
    }

    /// The headers of record `id`: the sink's own, then its writer and identity.
    pub fn headers(&self, held: &Held, id: Id) -> OwnedHeaders {
        let id = id.to_string();
        held.with_headers(OwnedHeaders::new())
            .insert(Header {
                key: WRITER_HEADER,
                value: Some(&self.writer),
            })
            .insert(Header {
                key: ID_HEADER,
                value: Some(&id),
            })
    }

    /// Keeps `records` of `time` until their checkpoint; `cap` gives a capability at
    /// `time`.
    pub fn stage(
        &mut self,
        time: Time,
        cap: impl FnOnce() -> Capability<Time>,
        records: Vec<Held>,
    ) {
        match self.caps.entry(time.epoch) {
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(cap());
            }
            std::collections::btree_map::Entry::Occupied(mut o) => {
                if time.event < o.get().time().event {
                    o.insert(cap());
                }
            }
        }
        for held in records {
            self.staged.push_back((time.epoch, self.next_seq, held));
            self.next_seq += 1;
        }
    }

    /// Writes a part at every checkpoint epoch the input `frontier` has sealed; once the
    /// input is done, releases everything.
    pub fn checkpoint(&mut self, frontier: &MutableAntichain<Time>) {
        let frontiers = std::slice::from_ref(frontier);
        while let Some(c) = self.aligner.due(frontiers) {
            self.part(c);
            let (live, changes) = (&self.live, &mut self.changes);
            let extra = Extra {
                read_from: self.read_from.clone(),
                next_seq: self.next_seq,
            };
            self.aligner.write_log(c, extra, |want| {
                let changed = std::mem::take(changes);
                let held = live.values().map(|(id, h)| (*id, Some(h.clone())));
                want.pick(held, changed.into_iter())
            });
            // Their records are in the part: its hold answers for them now.
            self.caps = self.caps.split_off(&(c + 1));
        }
        let least = frontier
            .frontier()
            .iter()
            .fold(None, |least: Option<Time>, t| {
                Some(least.map_or(*t, |l| Time {
                    event: l.event.min(t.event),
                    epoch: l.epoch.min(t.epoch),
                }))
            });
        let watermark = least.map_or(u64::MAX, |t| t.event);
        self.aligner.settle(watermark);
        // The last capability follows the input frontier (holding nothing it does not),
        // and stays where it is once the input is done, until the last delivery.
        if let (Some(keep), Some(t)) = (self.keep.as_mut(), least) {
            if *keep.time() != t {
                keep.downgrade(&t);
            }
        }
        if watermark == u64::MAX && !self.ended {
            // The input is done: no checkpoint will follow, so what waits is written now.
            self.ended = true;
            self.part(AT_END);
            self.caps.clear();
        }
    }

    /// Moves the staged records of epochs `<= c` into the records of checkpoint `c`.
    fn part(&mut self, c: u64) {
        let mut later = VecDeque::new();
        for (epoch, seq, held) in std::mem::take(&mut self.staged) {
            if epoch > c {
                later.push_back((epoch, seq, held));
                continue;
            }
            let id = Id {
                checkpoint: c,
                worker: self.worker,
                seq,
            };
            if c != AT_END {
                self.changes.push((id, Some(held.clone())));
            }
            self.live.insert(order(&id), (id, held));
        }
        self.staged = later;
    }

    /// The records to produce now, in order, with their delivery opaque: records of
    /// checkpoints below `complete_below` (every checkpoint with a manifest), or all
    /// once the input is done, each only after every record that arrived before it.
    pub fn release(&mut self, complete_below: u64) -> Vec<(usize, Id, Held)> {
        let below = if self.ended { u64::MAX } else { complete_below };
        // Records that arrived before this one are still staged.
        let staged_from = self.staged.front().map_or(u64::MAX, |(_, seq, _)| *seq);
        let from = match self.released {
            Some(o) => std::ops::Bound::Excluded(o),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        for (o, (id, held)) in self.live.range((from, std::ops::Bound::Unbounded)) {
            if !(id.checkpoint < below || self.ended) || id.seq > staged_from {
                break;
            }
            out.push((*o, *id, held.clone()));
        }
        if let Some((o, _, _)) = out.last() {
            self.released = Some(*o);
        }
        out.into_iter()
            .map(|(o, id, h)| {
                let opaque = self.next_opaque;
                self.next_opaque += 1;
                self.in_flight.insert(opaque, o);
                (opaque, id, h)
            })
            .collect()
    }

    /// The record of `opaque` was delivered at `offset` of `partition` (`None`: as a
    /// dead letter); returns its event time.
    pub fn delivered(&mut self, opaque: usize, at: Option<(i32, i64)>) -> Option<u64> {
        let o = self.in_flight.remove(&opaque)?;
        if let Some((partition, offset)) = at {
            let from = self.read_from.entry(partition).or_insert(0);
            *from = (*from).max(offset + 1);
        }
        let (id, held) = self.live.remove(&o)?;
        if !self.ended {
            self.changes.push((id, None));
        }
        Some(held.event)
    }

    /// Whether records wait for a checkpoint's manifest (the operator polls for it).
    pub fn waiting(&self) -> bool {
        self.live.len() > self.in_flight.len()
    }

    /// Once the input is done and everything is delivered, lets go of the last
    /// capability.
    pub fn finish(&mut self, nothing_queued: bool) {
        if self.ended && self.live.is_empty() && nothing_queued {
            self.keep = None;
        }
    }
}

/// The hash that picks a restored record's new worker: its key's (records of one key
/// stay in order), else its identity's.
fn owner_hash(id: &Id, held: &Held) -> u64 {
    match &held.key {
        Some(k) => hash(k),
        None => hash(id),
    }
}

/// A consumer for reading the output back, whose end-of-partition events (how the read
/// knows it is done) stay out of the error log.
fn consumer(kafka: &KafkaConfig) -> Result<SourceConsumer> {
    kafka
        .consumer_config()
        .create_with_context(SourceContext)
        .map_err(|e| Error::kafka("creating the exactly-once read-back consumer", e))
}

/// Every partition's high watermark: where a new sink's records start.
fn high_watermarks(kafka: &KafkaConfig, topic: &str) -> Result<ReadFrom> {
    let consumer = consumer(kafka)?;
    let mut out = ReadFrom::new();
    for p in partitions(&consumer, topic)? {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .map_err(|e| Error::kafka(format!("reading the end of {topic}/{p}"), e))?;
        out.insert(p, high);
    }
    Ok(out)
}

fn partitions(consumer: &SourceConsumer, topic: &str) -> Result<Vec<i32>> {
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(|e| Error::kafka(format!("reading the metadata of {topic}"), e))?;
    let t = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| Error::Sink {
            sink: topic.to_string(),
            reason: format!("the output topic {topic} does not exist"),
        })?;
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

/// The identities `writer` wrote to `topic` from `from` on (partitions not in `from`:
/// from their start), read to the topic's current end.
fn read_back(
    kafka: &KafkaConfig,
    topic: &str,
    writer: &str,
    from: &ReadFrom,
) -> Result<HashSet<Id>> {
    let started = Instant::now();
    let consumer = consumer(kafka)?;
    // Each partition is read to its end-of-partition event: the high watermark of
    // fetch responses. (ListOffsets can report less than the end on some brokers.)
    let mut assignment = TopicPartitionList::new();
    let mut unfinished = HashSet::new();
    for p in partitions(&consumer, topic)? {
        let at = match from.get(&p) {
            Some(&o) => Offset::Offset(o),
            None => Offset::Beginning,
        };
        assignment
            .add_partition_offset(topic, p, at)
            .map_err(|e| Error::kafka("assigning the read-back consumer", e))?;
        unfinished.insert(p);
    }
    let mut ids = HashSet::new();
    let mut read = 0u64;
    consumer
        .assign(&assignment)
        .map_err(|e| Error::kafka("assigning the read-back consumer", e))?;
    while !unfinished.is_empty() {
        if started.elapsed() > READ_BACK_TIMEOUT {
            return Err(Error::Sink {
                sink: topic.to_string(),
                reason: format!(
                    "reading the topic back for records already written took over {:?} \
                     ({} partitions unfinished)",
                    READ_BACK_TIMEOUT,
                    unfinished.len()
                ),
            });
        }
        let Some(msg) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let msg = match msg {
            Ok(m) => m,
            Err(rdkafka::error::KafkaError::PartitionEOF(p)) => {
                unfinished.remove(&p);
                continue;
            }
            Err(e) => return Err(Error::kafka(format!("reading {topic} back"), e)),
        };
        if let Some(headers) = msg.headers() {
            let mut ours = false;
            let mut id = None;
            for h in headers.iter() {
                match (h.key, h.value) {
                    (WRITER_HEADER, Some(v)) => ours = v == writer.as_bytes(),
                    (ID_HEADER, Some(v)) => {
                        id = std::str::from_utf8(v).ok().and_then(|s| s.parse().ok())
                    }
                    _ => {}
                }
            }
            if let (true, Some(id)) = (ours, id) {
                ids.insert(id);
            }
        }
        read += 1;
    }
    tracing::info!(topic, ours = ids.len(), read, elapsed = ?started.elapsed(),
        "read the exactly-once sink's topic back");
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_written() {
        let id = Id {
            checkpoint: 41,
            worker: 3,
            seq: 7,
        };
        assert_eq!(id.to_string().parse::<Id>(), Ok(id));
        assert!("1.2".parse::<Id>().is_err());
        assert!("1.2.3.4".parse::<Id>().is_err());
        assert!("a.2.3".parse::<Id>().is_err());
    }
}
