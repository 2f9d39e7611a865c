//! Which primary owns each hash slot, read from `CLUSTER SLOTS` over a short-lived link.
//!
//! ```text
//! CLUSTER SLOTS -> *N
//!   *3+  :start  :end  *2+ [$host :port $id …]  [replica …]…
//! ```
//!
//! A primary whose endpoint is unknown (`$-1`, `""` or `"?"`) is reached at the
//! address of the node that answered, as Redis recommends.

use std::time::Duration;

use fred::types::config::Server;

use super::link::{Endpoint, Link, LinkError};
use super::resp::Reply;

/// The primary of every slot range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMap {
    /// `(first, last, primary)`, sorted by `first`.
    ranges: Vec<(u16, u16, Server)>,
}

impl SlotMap {
    /// Parses a `CLUSTER SLOTS` reply from the node `asked`.
    pub fn parse(reply: &Reply, asked: &Server) -> Result<SlotMap, LinkError> {
        let invalid = || LinkError::Refused("unexpected CLUSTER SLOTS reply".into());
        let items = match reply {
            Reply::Array(Some(items)) => items,
            Reply::Error(text) => {
                return Err(LinkError::Refused(
                    String::from_utf8_lossy(text).into_owned(),
                ))
            }
            _ => return Err(invalid()),
        };
        let mut ranges = Vec::with_capacity(items.len());
        for item in items {
            let Reply::Array(Some(fields)) = item else {
                return Err(invalid());
            };
            let slot = |i: usize| match fields.get(i) {
                Some(Reply::Integer(n)) => u16::try_from(*n).ok(),
                _ => None,
            };
            let (Some(first), Some(last)) = (slot(0), slot(1)) else {
                return Err(invalid());
            };
            let Some(Reply::Array(Some(primary))) = fields.get(2) else {
                return Err(invalid());
            };
            let port = match primary.get(1) {
                Some(Reply::Integer(n)) => u16::try_from(*n).map_err(|_| invalid())?,
                _ => return Err(invalid()),
            };
            let host = primary
                .first()
                .and_then(Reply::bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .filter(|h| !h.is_empty() && h != "?")
                .unwrap_or_else(|| asked.host.to_string());
            ranges.push((first, last, Server::new(host, port)));
        }
        ranges.sort_by_key(|(first, _, _)| *first);
        Ok(SlotMap { ranges })
    }

    /// The primary that owns `slot`, if any node serves it.
    pub fn owner(&self, slot: u16) -> Option<&Server> {
        let after = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, server) = self.ranges.get(after.checked_sub(1)?)?;
        (slot <= *last).then_some(server)
    }

    /// Every primary, once.
    pub fn primaries(&self) -> Vec<Server> {
        let mut all: Vec<Server> = self.ranges.iter().map(|(_, _, s)| s.clone()).collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Asks `seeds` in turn for the slot map; the first good answer wins.
pub async fn fetch(
    endpoint: &Endpoint,
    seeds: &[Server],
    connect: Duration,
    command: Duration,
) -> Result<SlotMap, LinkError> {
    let mut last = LinkError::Config("no cluster node to ask for the slot map".into());
    for seed in seeds {
        let asked = async {
            let mut link =
                Link::connect(&endpoint.at(seed.clone()), "restash:slots", connect).await?;
            match tokio::time::timeout(command, link.request(&[b"CLUSTER", b"SLOTS"])).await {
                Ok(reply) => SlotMap::parse(&reply?, seed),
                Err(_) => Err(LinkError::Timeout(command.as_millis())),
            }
        };
        match asked.await {
            Ok(map) if !map.ranges.is_empty() => return Ok(map),
            Ok(_) => last = LinkError::Refused("the cluster serves no slot".into()),
            Err(error) => last = error,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    fn range(first: i64, last: i64, host: Reply, port: i64) -> Reply {
        Reply::Array(Some(vec![
            Reply::Integer(first),
            Reply::Integer(last),
            Reply::Array(Some(vec![host, Reply::Integer(port), bulk("id")])),
            Reply::Array(Some(vec![
                bulk("10.0.0.9"),
                Reply::Integer(9),
                bulk("replica"),
            ])),
        ]))
    }

    #[test]
    fn maps_slots_to_primaries() {
        let reply = Reply::Array(Some(vec![
            range(10923, 16383, bulk("10.0.0.3"), 3),
            range(0, 5460, bulk("10.0.0.1"), 1),
            range(5461, 10922, Reply::Bulk(None), 2),
        ]));
        let asked = Server::new("seed", 7000);
        let map = SlotMap::parse(&reply, &asked).unwrap();
        assert_eq!(map.owner(0), Some(&Server::new("10.0.0.1", 1)));
        assert_eq!(map.owner(5460), Some(&Server::new("10.0.0.1", 1)));
        // An unknown endpoint is the node that answered, on the listed port.
        assert_eq!(map.owner(5461), Some(&Server::new("seed", 2)));
        assert_eq!(map.owner(16383), Some(&Server::new("10.0.0.3", 3)));
        assert_eq!(map.primaries().len(), 3);
    }

    #[test]
    fn unserved_slots_have_no_owner() {
        let reply = Reply::Array(Some(vec![range(100, 200, bulk("h"), 1)]));
        let map = SlotMap::parse(&reply, &Server::new("seed", 1)).unwrap();
        assert_eq!(map.owner(99), None);
        assert_eq!(map.owner(150), Some(&Server::new("h", 1)));
        assert_eq!(map.owner(201), None);
        assert_eq!(SlotMap::default().owner(0), None);
    }

    #[test]
    fn refuses_errors_and_garbage() {
        let asked = Server::new("seed", 1);
        let error = Reply::Error(Bytes::from_static(
            b"ERR This instance has cluster support disabled",
        ));
        assert!(SlotMap::parse(&error, &asked).is_err());
        assert!(SlotMap::parse(&Reply::Integer(1), &asked).is_err());
        let short = Reply::Array(Some(vec![Reply::Array(Some(vec![Reply::Integer(0)]))]));
        assert!(SlotMap::parse(&short, &asked).is_err());
    }
}
