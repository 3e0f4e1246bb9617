//! The slot map: which node serves each of the 16384 slots, and its replicas, read from
//! `CLUSTER SHARDS` (Redis 7) or `CLUSTER SLOTS`. One immutable value: a refresh builds a new
//! one and swaps it in whole.

use super::redirect::NodeAddr;
use super::slot::SLOTS;
use super::value::{self, Value};

/// No node serves the slot.
const UNSERVED: u16 = u16::MAX;

/// One range of slots with its master and replicas (indexes into [`SlotMap::nodes`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotRange {
    pub first: u16,
    pub last: u16,
    pub master: usize,
    pub replicas: Vec<usize>,
}

/// Which node serves each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotMap {
    /// Every node named, masters and replicas, each once.
    pub nodes: Vec<NodeAddr>,
    pub ranges: Vec<SlotRange>,
    /// Per slot: its index in `ranges`, or [`UNSERVED`].
    by_slot: Vec<u16>,
}

/// Why a reply does not make a slot map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("the reply is not valid RESP: {0}")]
    Resp(#[from] value::ValueError),
    #[error("the node answered an error: {0}")]
    Refused(String),
    #[error("the reply does not describe slots: {0}")]
    Shape(&'static str),
    #[error("the reply lists no slot")]
    Empty,
}

impl SlotMap {
    fn build(entries: Vec<(u16, u16, NodeAddr, Vec<NodeAddr>)>) -> Result<SlotMap, TopologyError> {
        let mut nodes: Vec<NodeAddr> = Vec::new();
        let index_of =
            |addr: NodeAddr, nodes: &mut Vec<NodeAddr>| match nodes.iter().position(|n| *n == addr)
            {
                Some(i) => i,
                None => {
                    nodes.push(addr);
                    nodes.len() - 1
                }
            };
        let mut ranges = Vec::with_capacity(entries.len());
        let mut by_slot = vec![UNSERVED; SLOTS];
        for (first, last, master, replicas) in entries {
            if first > last || usize::from(last) >= SLOTS {
                return Err(TopologyError::Shape("a slot range out of 0..16383"));
            }
            let master = index_of(master, &mut nodes);
            let replicas = replicas
                .into_iter()
                .map(|r| index_of(r, &mut nodes))
                .collect();
            let range =
                u16::try_from(ranges.len()).map_err(|_| TopologyError::Shape("too many ranges"))?;
            for slot in first..=last {
                by_slot[usize::from(slot)] = range;
            }
            ranges.push(SlotRange {
                first,
                last,
                master,
                replicas,
            });
        }
        if ranges.is_empty() {
            return Err(TopologyError::Empty);
        }
        Ok(SlotMap {
            nodes,
            ranges,
            by_slot,
        })
    }

    /// A map from its nodes and ranges (indexes into `nodes`), checked as a reply is.
    pub fn from_parts(
        nodes: Vec<NodeAddr>,
        ranges: Vec<SlotRange>,
    ) -> Result<SlotMap, TopologyError> {
        let node = |i: usize| {
            nodes
                .get(i)
                .cloned()
                .ok_or(TopologyError::Shape("a range names no node"))
        };
        let entries = ranges
            .iter()
            .map(|r| {
                let replicas = r
                    .replicas
                    .iter()
                    .map(|&i| node(i))
                    .collect::<Result<_, _>>()?;
                Ok((r.first, r.last, node(r.master)?, replicas))
            })
            .collect::<Result<Vec<_>, TopologyError>>()?;
        SlotMap::build(entries)
    }

    /// The range that serves `slot`, if any.
    pub fn range(&self, slot: u16) -> Option<&SlotRange> {
        let index = *self.by_slot.get(usize::from(slot))?;
        self.ranges.get(usize::from(index))
    }

    /// The master serving `slot`.
    pub fn master(&self, slot: u16) -> Option<&NodeAddr> {
        self.range(slot).map(|r| &self.nodes[r.master])
    }

    /// How many slots have a master.
    pub fn served_slots(&self) -> usize {
        self.by_slot.iter().filter(|&&r| r != UNSERVED).count()
    }
}

fn refused(value: &Value<'_>) -> Option<TopologyError> {
    match value {
        Value::Error(text) => Some(TopologyError::Refused(
            String::from_utf8_lossy(text).into_owned(),
        )),
        _ => None,
    }
}

fn slot_number(value: &Value<'_>) -> Result<u16, TopologyError> {
    value
        .int()
        .and_then(|n| u16::try_from(n).ok())
        .ok_or(TopologyError::Shape("a slot is not a number"))
}

/// A node's address; an empty or unknown (`?`) host is the node that was asked.
fn node_addr(
    host: Option<&[u8]>,
    port: Option<i64>,
    asked: &NodeAddr,
) -> Result<NodeAddr, TopologyError> {
    let port = port
        .and_then(|p| u16::try_from(p).ok())
        .ok_or(TopologyError::Shape("a node without a port"))?;
    let host = match host {
        Some(h) if !h.is_empty() && h != b"?" => String::from_utf8_lossy(h).into_owned(),
        _ => asked.host.clone(),
    };
    Ok(NodeAddr { host, port })
}

/// Reads a `CLUSTER SLOTS` reply from the node at `asked`.
pub fn from_cluster_slots(reply: &[u8], asked: &NodeAddr) -> Result<SlotMap, TopologyError> {
    let value = value::parse(reply)?;
    if let Some(err) = refused(&value) {
        return Err(err);
    }
    let entries = value.items().ok_or(TopologyError::Shape("not an array"))?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let fields = entry
            .items()
            .ok_or(TopologyError::Shape("an entry is not an array"))?;
        let [first, last, master, replicas @ ..] = fields else {
            return Err(TopologyError::Shape("an entry without a master"));
        };
        let node = |v: &Value<'_>| -> Result<NodeAddr, TopologyError> {
            let parts = v
                .items()
                .ok_or(TopologyError::Shape("a node is not an array"))?;
            node_addr(
                parts.first().and_then(Value::text),
                parts.get(1).and_then(Value::int),
                asked,
            )
        };
        out.push((
            slot_number(first)?,
            slot_number(last)?,
            node(master)?,
            replicas.iter().map(node).collect::<Result<_, _>>()?,
        ));
    }
    SlotMap::build(out)
}

/// Reads a `CLUSTER SHARDS` reply (Redis 7) from the node at `asked`. Nodes whose `health`
/// is not `online` are left out; a shard whose master is not online serves nothing.
pub fn from_cluster_shards(reply: &[u8], asked: &NodeAddr) -> Result<SlotMap, TopologyError> {
    let value = value::parse(reply)?;
    if let Some(err) = refused(&value) {
        return Err(err);
    }
    let shards = value.items().ok_or(TopologyError::Shape("not an array"))?;
    let mut out = Vec::new();
    for shard in shards {
        let slots = shard
            .field(b"slots")
            .and_then(Value::items)
            .ok_or(TopologyError::Shape("a shard without slots"))?;
        let nodes = shard
            .field(b"nodes")
            .and_then(Value::items)
            .ok_or(TopologyError::Shape("a shard without nodes"))?;
        let mut master = None;
        let mut replicas = Vec::new();
        for node in nodes {
            let online = node.field(b"health").and_then(Value::text) == Some(b"online");
            if !online {
                continue;
            }
            let host = node
                .field(b"ip")
                .or_else(|| node.field(b"endpoint"))
                .and_then(Value::text);
            let addr = node_addr(host, node.field(b"port").and_then(Value::int), asked)?;
            match node.field(b"role").and_then(Value::text) {
                Some(b"master") => master = Some(addr),
                _ => replicas.push(addr),
            }
        }
        let Some(master) = master else { continue };
        for pair in slots.chunks(2) {
            let [first, last] = pair else {
                return Err(TopologyError::Shape("an odd slot list"));
            };
            out.push((
                slot_number(first)?,
                slot_number(last)?,
                master.clone(),
                replicas.clone(),
            ));
        }
    }
    SlotMap::build(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked() -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port: 7000,
        }
    }

    fn bulk(s: &str) -> String {
        format!("${}\r\n{s}\r\n", s.len())
    }

    fn node(host: &str, port: u16) -> String {
        format!("*3\r\n{}:{port}\r\n{}", bulk(host), bulk("0123abcd"))
    }

    #[test]
    fn cluster_slots_maps_every_slot_to_its_master_and_replicas() {
        let reply = format!(
            "*2\r\n*4\r\n:0\r\n:8191\r\n{}{}*3\r\n:8192\r\n:16383\r\n{}",
            node("127.0.0.1", 7000),
            node("127.0.0.1", 7003),
            node("", 7001),
        );
        let map = from_cluster_slots(reply.as_bytes(), &asked()).unwrap();
        assert_eq!(map.served_slots(), SLOTS);
        assert_eq!(map.master(0).unwrap().port, 7000);
        assert_eq!(map.master(8191).unwrap().port, 7000);
        let second = map.master(16383).unwrap();
        assert_eq!((second.host.as_str(), second.port), ("127.0.0.1", 7001));
        let range = map.range(5).unwrap();
        assert_eq!(map.nodes[range.replicas[0]].port, 7003);
        assert_eq!(map.nodes.len(), 3);
    }

    #[test]
    fn unserved_slots_and_refusals_are_told_apart() {
        let reply = format!("*1\r\n*3\r\n:0\r\n:99\r\n{}", node("127.0.0.1", 7000));
        let map = from_cluster_slots(reply.as_bytes(), &asked()).unwrap();
        assert_eq!(map.served_slots(), 100);
        assert_eq!(map.master(100), None);
        assert_eq!(
            from_cluster_slots(
                b"-ERR This instance has cluster support disabled\r\n",
                &asked()
            ),
            Err(TopologyError::Refused(
                "ERR This instance has cluster support disabled".into()
            ))
        );
        assert_eq!(
            from_cluster_slots(b"*0\r\n", &asked()),
            Err(TopologyError::Empty)
        );
        assert!(
            from_cluster_slots(b"*1\r\n*3\r\n:9\r\n:1\r\n*2\r\n$1\r\na\r\n:1\r\n", &asked())
                .is_err()
        );
    }

    #[test]
    fn cluster_shards_skips_nodes_that_are_not_online() {
        let node = |ip: &str, port: u16, role: &str, health: &str| {
            format!(
                "*8\r\n{}{}{}:{port}\r\n{}{}{}{}",
                bulk("ip"),
                bulk(ip),
                bulk("port"),
                bulk("role"),
                bulk(role),
                bulk("health"),
                bulk(health)
            )
        };
        let reply = format!(
            "*1\r\n*4\r\n{}*4\r\n:0\r\n:100\r\n:200\r\n:16383\r\n{}*3\r\n{}{}{}",
            bulk("slots"),
            bulk("nodes"),
            node("127.0.0.1", 7000, "master", "online"),
            node("127.0.0.1", 7003, "replica", "online"),
            node("127.0.0.1", 7006, "replica", "loading"),
        );
        let map = from_cluster_shards(reply.as_bytes(), &asked()).unwrap();
        assert_eq!(map.served_slots(), 101 + 16184);
        assert_eq!(map.master(150), None);
        assert_eq!(map.master(300).unwrap().port, 7000);
        let range = map.range(300).unwrap();
        assert_eq!(range.replicas.len(), 1);
        assert_eq!(map.nodes[range.replicas[0]].port, 7003);
    }
}
