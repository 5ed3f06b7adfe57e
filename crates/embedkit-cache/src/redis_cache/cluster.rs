//! A Redis Cluster's map of slots to primaries (from `CLUSTER SLOTS`), and the routing of keys by it.

use super::Failure;
use crate::slot::{SLOTS, key_slot};
use redis::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// One Redis server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Node {
    pub(super) host: String,
    pub(super) port: u16,
}

/// Which node owns each of the 16384 slots.
#[derive(Debug)]
pub(super) struct SlotTable {
    pub(super) owner: Vec<u16>,
    pub(super) nodes: Vec<Node>,
}

impl SlotTable {
    const UNASSIGNED: u16 = u16::MAX;

    pub(super) fn node_of(&self, slot: u16) -> Result<&Node, Failure> {
        let i = self.owner[usize::from(slot)];
        self.nodes
            .get(usize::from(i))
            .ok_or_else(|| Failure::Cluster(format!("slot {slot} is served by no node")))
    }
}

/// Where commands go.
#[derive(Debug, Clone)]
pub(super) enum Route {
    Single(Node),
    Cluster(Arc<SlotTable>),
}

impl Route {
    pub(super) fn node_for(&self, key: &str) -> Result<Node, Failure> {
        match self {
            Route::Single(n) => Ok(n.clone()),
            Route::Cluster(t) => t.node_of(key_slot(key.as_bytes())).cloned(),
        }
    }

    /// Every primary, for commands that visit all keys (SCAN).
    pub(super) fn all_nodes(&self) -> Vec<Node> {
        match self {
            Route::Single(n) => vec![n.clone()],
            Route::Cluster(t) => t.nodes.clone(),
        }
    }
}

/// Reads a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id…], replicas…], …]`.
pub(super) fn parse_slots(v: &Value, asked: &Node) -> Result<SlotTable, Failure> {
    let bad = |what: &str| Failure::Cluster(format!("unexpected CLUSTER SLOTS reply: {what}"));
    let Value::Array(ranges) = v else {
        return Err(bad("not an array"));
    };
    let mut owner = vec![SlotTable::UNASSIGNED; usize::from(SLOTS)];
    let mut nodes: Vec<Node> = Vec::new();
    for range in ranges {
        let Value::Array(parts) = range else {
            return Err(bad("range is not an array"));
        };
        let int = |v: Option<&Value>| match v {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        };
        let (Some(start), Some(end)) = (int(parts.first()), int(parts.get(1))) else {
            return Err(bad("range without bounds"));
        };
        let Some(Value::Array(primary)) = parts.get(2) else {
            return Err(bad("range without a primary"));
        };
        let host = match primary.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => return Err(bad("primary without a host")),
        };
        // An empty host (or "?") means "the address you reached me at".
        let host = if host.is_empty() || host == "?" {
            asked.host.clone()
        } else {
            host
        };
        let port = int(primary.get(1))
            .and_then(|p| u16::try_from(p).ok())
            .ok_or_else(|| bad("primary without a port"))?;
        let node = Node { host, port };
        let index = match nodes.iter().position(|n| *n == node) {
            Some(i) => i,
            None => {
                nodes.push(node);
                nodes.len() - 1
            }
        };
        let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) else {
            return Err(bad("negative slot"));
        };
        if start > end || end >= usize::from(SLOTS) {
            return Err(bad("slot out of range"));
        }
        let index = u16::try_from(index).map_err(|_| bad("too many nodes"))?;
        owner[start..=end].fill(index);
    }
    if let Some(slot) = owner.iter().position(|&o| o == SlotTable::UNASSIGNED) {
        return Err(Failure::Cluster(format!(
            "slot {slot} is not assigned to any node (cluster still forming?)"
        )));
    }
    Ok(SlotTable { owner, nodes })
}

/// Groups key indices by node and, within a node, by slot (ordered, so pipelines are reproducible).
pub(super) fn group_by_slot<'k>(
    table: &SlotTable,
    keys: impl Iterator<Item = (usize, &'k str)>,
) -> Result<BTreeMap<u16, BTreeMap<u16, Vec<usize>>>, Failure> {
    let mut groups: BTreeMap<u16, BTreeMap<u16, Vec<usize>>> = BTreeMap::new();
    for (i, key) in keys {
        let slot = key_slot(key.as_bytes());
        let node = table.owner[usize::from(slot)];
        if usize::from(node) >= table.nodes.len() {
            return Err(Failure::Cluster(format!(
                "slot {slot} is served by no node"
            )));
        }
        groups
            .entry(node)
            .or_default()
            .entry(slot)
            .or_default()
            .push(i);
    }
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_reply_is_parsed_and_checked() {
        let node = |h: &str, p: i64| {
            Value::Array(vec![
                Value::BulkString(h.as_bytes().to_vec()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let asked = Node {
            host: "seed".into(),
            port: 1,
        };
        let reply = Value::Array(vec![
            Value::Array(vec![Value::Int(0), Value::Int(8191), node("a", 7000)]),
            Value::Array(vec![Value::Int(8192), Value::Int(16383), node("", 7001)]),
        ]);
        let t = parse_slots(&reply, &asked).unwrap();
        assert_eq!(t.nodes.len(), 2);
        assert_eq!(t.node_of(0).unwrap().port, 7000);
        assert_eq!(t.node_of(16383).unwrap().host, "seed");
        let partial = Value::Array(vec![Value::Array(vec![
            Value::Int(0),
            Value::Int(100),
            node("a", 7000),
        ])]);
        assert!(parse_slots(&partial, &asked).is_err());
        assert!(parse_slots(&Value::Nil, &asked).is_err());
    }

    #[test]
    fn keys_group_by_node_then_slot() {
        let mut owner = vec![0u16; usize::from(SLOTS)];
        owner[8192..].fill(1);
        let table = SlotTable {
            owner,
            nodes: vec![
                Node {
                    host: "a".into(),
                    port: 1,
                },
                Node {
                    host: "b".into(),
                    port: 2,
                },
            ],
        };
        let keys = ["{t}1", "foo", "{t}2", "bar", "{t}3"];
        let groups = group_by_slot(&table, keys.iter().copied().enumerate()).unwrap();
        let tag = key_slot(b"t");
        let node_of = |s: u16| u16::from(s >= 8192);
        assert_eq!(groups[&node_of(tag)][&tag], vec![0, 2, 4]);
        let total: usize = groups.values().flat_map(|s| s.values()).map(Vec::len).sum();
        assert_eq!(total, keys.len());
        for (node, slots) in &groups {
            for (slot, idx) in slots {
                assert_eq!(node_of(*slot), *node);
                for &i in idx {
                    assert_eq!(key_slot(keys[i].as_bytes()), *slot);
                }
            }
        }
    }
}
