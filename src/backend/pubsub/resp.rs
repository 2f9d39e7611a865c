//! Just enough RESP2 for a subscriber or MONITOR connection: encode commands,
//! decode replies incrementally.
//!
//! ```text
//! +OK\r\n  -ERR x\r\n  :1\r\n  $5\r\nhello\r\n  $-1\r\n  *3\r\n$7\r\nmessage\r\n…
//! ```
//!
//! fred's subscriber client cannot serve these streams: it drops the pattern of a
//! `pmessage`, reroutes keyspace notifications away from the message stream and
//! skips channels that are not UTF-8; this decoder keeps every frame as Redis sent it.

use bytes::Bytes;

/// Deepest array nesting accepted (Pub/Sub frames are one level deep).
const MAX_DEPTH: usize = 8;

/// One RESP2 reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(Bytes),
    /// `-text`.
    Error(Bytes),
    /// `:n`.
    Integer(i64),
    /// `$n` and its bytes, `None` for `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` and its items, `None` for `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The bytes of a simple string or bulk string.
    pub fn bytes(&self) -> Option<&Bytes> {
        match self {
            Reply::Simple(b) | Reply::Bulk(Some(b)) => Some(b),
            _ => None,
        }
    }
}

/// Redis sent something that is not RESP2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid RESP data from Redis: {0}")]
pub struct ProtocolError(&'static str);

/// Appends `args` as one RESP command (an array of bulk strings) to `out`.
pub use crate::backend::mux::codec::encode_command as encode;

/// Decodes the reply at the start of `buf`: `Ok(None)` while it is incomplete,
/// otherwise the reply and how many bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, ProtocolError> {
    let mut at = 0;
    match parse(buf, &mut at, 0)? {
        Some(reply) => Ok(Some((reply, at))),
        None => Ok(None),
    }
}

fn parse(buf: &[u8], at: &mut usize, depth: usize) -> Result<Option<Reply>, ProtocolError> {
    let Some(line) = line(buf, *at)? else {
        return Ok(None);
    };
    let (kind, body) = (buf[*at], &buf[*at + 1..line]);
    let next = line + 2;
    match kind {
        b'+' => {
            *at = next;
            Ok(Some(Reply::Simple(Bytes::copy_from_slice(body))))
        }
        b'-' => {
            *at = next;
            Ok(Some(Reply::Error(Bytes::copy_from_slice(body))))
        }
        b':' => {
            *at = next;
            Ok(Some(Reply::Integer(number(body)?)))
        }
        b'$' => {
            let len = number(body)?;
            if len < 0 {
                *at = next;
                return Ok(Some(Reply::Bulk(None)));
            }
            let len = usize::try_from(len).map_err(|_| ProtocolError("bulk length"))?;
            let end = next.checked_add(len).ok_or(ProtocolError("bulk length"))?;
            if buf.len() < end + 2 {
                return Ok(None);
            }
            if &buf[end..end + 2] != b"\r\n" {
                return Err(ProtocolError("bulk string without CRLF"));
            }
            *at = end + 2;
            Ok(Some(Reply::Bulk(Some(Bytes::copy_from_slice(
                &buf[next..end],
            )))))
        }
        b'*' => {
            let len = number(body)?;
            if len < 0 {
                *at = next;
                return Ok(Some(Reply::Array(None)));
            }
            if depth >= MAX_DEPTH {
                return Err(ProtocolError("arrays nested too deeply"));
            }
            let mut cursor = next;
            let mut items = Vec::with_capacity(usize::try_from(len).unwrap_or(0).min(16));
            for _ in 0..len {
                match parse(buf, &mut cursor, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            *at = cursor;
            Ok(Some(Reply::Array(Some(items))))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

/// The index of the `\r` ending the line that starts at `from`, once it is complete.
fn line(buf: &[u8], from: usize) -> Result<Option<usize>, ProtocolError> {
    let Some(rest) = buf.get(from..) else {
        return Ok(None);
    };
    match rest.iter().position(|b| *b == b'\n') {
        None => Ok(None),
        Some(0) => Err(ProtocolError("empty line")),
        Some(n) if rest[n - 1] == b'\r' && n >= 2 => Ok(Some(from + n - 1)),
        Some(_) => Err(ProtocolError("line without CRLF")),
    }
}

fn number(text: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(Some(Bytes::copy_from_slice(s.as_bytes())))
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        let args: [&[u8]; 3] = [b"SUBSCRIBE", b"a b", b""];
        encode(&mut out, &args);
        assert_eq!(out, b"*3\r\n$9\r\nSUBSCRIBE\r\n$3\r\na b\r\n$0\r\n\r\n");
    }

    #[test]
    fn decodes_every_type() {
        let input = b"+OK\r\n-ERR x\r\n:42\r\n$-1\r\n*-1\r\n$2\r\n\r\n\r\n";
        let mut at = 0;
        let mut replies = Vec::new();
        while let Some((reply, used)) = decode(&input[at..]).unwrap() {
            replies.push(reply);
            at += used;
        }
        assert_eq!(at, input.len());
        assert_eq!(
            replies,
            [
                Reply::Simple(Bytes::from_static(b"OK")),
                Reply::Error(Bytes::from_static(b"ERR x")),
                Reply::Integer(42),
                Reply::Bulk(None),
                Reply::Array(None),
                Reply::Bulk(Some(Bytes::from_static(b"\r\n"))),
            ]
        );
    }

    #[test]
    fn decodes_pubsub_frames_and_waits_for_the_rest() {
        let frame = b"*4\r\n$8\r\npmessage\r\n$6\r\nuser:*\r\n$8\r\nuser:123\r\n$2\r\nhi\r\n";
        for cut in 0..frame.len() {
            assert_eq!(decode(&frame[..cut]).unwrap(), None, "cut at {cut}");
        }
        let (reply, used) = decode(frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(
            reply,
            Reply::Array(Some(vec![
                bulk("pmessage"),
                bulk("user:*"),
                bulk("user:123"),
                bulk("hi")
            ]))
        );
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(b"?x\r\n").is_err());
        assert!(decode(b":abc\r\n").is_err());
        assert!(decode(b"$1\r\nab\r\n").is_err());
        assert!(decode(b"+OK\n").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(decode(deep.as_bytes()).is_err());
    }
}
