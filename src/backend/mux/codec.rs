//! RESP2 for the multiplexed connections: commands out, reply frames in.
//!
//! Replies become the same [`Frame`]s fred hands back for a RESP2 connection
//! (`+` simple string, `-` simple error, `:` number, `$` blob string, `*` array,
//! `$-1`/`*-1` null), so every reply writer works on either path. Unlike fred, an
//! error reply that is not UTF-8 does not break the connection: it becomes a
//! `BlobError` with its bytes.

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::reply::Frame;

/// Deepest array nesting accepted in a reply (Redis' deepest replies are a few levels).
const MAX_DEPTH: usize = 64;

/// A reply Redis should never send: the connection cannot be trusted after it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reply from Redis: {0}")]
pub struct ProtocolError(&'static str);

/// Appends one command as a RESP2 array of bulk strings.
pub fn encode_command(out: &mut BytesMut, args: &[Bytes]) {
    let size: usize = args.iter().map(|a| a.len() + 16).sum::<usize>() + 16;
    out.reserve(size);
    put_header(out, b'*', args.len());
    for arg in args {
        put_header(out, b'$', arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

fn put_header(out: &mut BytesMut, prefix: u8, len: usize) {
    out.put_u8(prefix);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

/// The length of the first complete reply in `buf`, `None` if more bytes are needed.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    scan(buf, 0, 0)
}

/// Decodes one complete reply (as measured by [`reply_len`]) from the start of `buf`.
pub fn decode(buf: &Bytes) -> Result<Frame, ProtocolError> {
    decode_at(buf, 0, 0).map(|(frame, _)| frame)
}

/// Where the line starting at `at` ends: the index of its `\r`.
fn line_end(buf: &[u8], at: usize) -> Option<usize> {
    let rest = buf.get(at..)?;
    let cr = memchr_cr(rest)?;
    // The `\n` must be there too.
    (rest.len() > cr + 1).then_some(at + cr)
}

fn memchr_cr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\r')
}

fn parse_int(digits: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ProtocolError("a length or integer is not a number"))
}

/// End (exclusive) of the reply starting at `at`, if complete.
fn scan(buf: &[u8], at: usize, depth: usize) -> Result<Option<usize>, ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("arrays nested too deeply"));
    }
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let after_line = end + 2;
    match kind {
        b'+' | b'-' | b':' => Ok(Some(after_line)),
        b'$' => {
            let len = parse_int(&buf[at + 1..end])?;
            if len < 0 {
                return Ok(Some(after_line));
            }
            let total = after_line + len as usize + 2;
            Ok((buf.len() >= total).then_some(total))
        }
        b'*' => {
            let count = parse_int(&buf[at + 1..end])?;
            let mut next = after_line;
            for _ in 0..count.max(0) {
                match scan(buf, next, depth + 1)? {
                    Some(end) => next = end,
                    None => return Ok(None),
                }
            }
            Ok(Some(next))
        }
        _ => Err(ProtocolError("unknown reply type")),
    }
}

fn decode_at(buf: &Bytes, at: usize, depth: usize) -> Result<(Frame, usize), ProtocolError> {
    if depth > MAX_DEPTH {
        return Err(ProtocolError("arrays nested too deeply"));
    }
    let kind = *buf.get(at).ok_or(ProtocolError("truncated reply"))?;
    let end = line_end(buf, at + 1).ok_or(ProtocolError("truncated reply"))?;
    let line = at + 1..end;
    let after_line = end + 2;
    let frame = match kind {
        b'+' => Frame::SimpleString {
            data: buf.slice(line),
            attributes: None,
        },
        b'-' => match std::str::from_utf8(&buf[line.clone()]) {
            Ok(text) => Frame::SimpleError {
                data: text.to_owned().into(),
                attributes: None,
            },
            Err(_) => Frame::BlobError {
                data: buf.slice(line),
                attributes: None,
            },
        },
        b':' => Frame::Number {
            data: parse_int(&buf[line])?,
            attributes: None,
        },
        b'$' => {
            let len = parse_int(&buf[line])?;
            if len < 0 {
                return Ok((Frame::Null, after_line));
            }
            let data_end = after_line + len as usize;
            if buf.len() < data_end + 2 {
                return Err(ProtocolError("truncated reply"));
            }
            return Ok((
                Frame::BlobString {
                    data: buf.slice(after_line..data_end),
                    attributes: None,
                },
                data_end + 2,
            ));
        }
        b'*' => {
            let count = parse_int(&buf[line])?;
            if count < 0 {
                return Ok((Frame::Null, after_line));
            }
            // Each item takes at least 3 bytes; never trust a count beyond that.
            let mut items = Vec::with_capacity((count as usize).min(buf.len() / 3));
            let mut next = after_line;
            for _ in 0..count {
                let (item, end) = decode_at(buf, next, depth + 1)?;
                items.push(item);
                next = end;
            }
            return Ok((
                Frame::Array {
                    data: items,
                    attributes: None,
                },
                next,
            ));
        }
        _ => return Err(ProtocolError("unknown reply type")),
    };
    Ok((frame, after_line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(wire: &[u8]) -> Vec<Frame> {
        let mut frames = Vec::new();
        let mut buf = BytesMut::from(wire);
        while let Some(len) = reply_len(&buf).unwrap() {
            let bytes = buf.split_to(len).freeze();
            frames.push(decode(&bytes).unwrap());
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        frames
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = BytesMut::new();
        encode_command(
            &mut out,
            &[
                Bytes::from_static(b"SET"),
                Bytes::from_static(b"k"),
                Bytes::new(),
            ],
        );
        assert_eq!(&out[..], b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_reply_type() {
        let frames = decode_all(b"+OK\r\n-ERR bad\r\n:-12\r\n$5\r\nhe\r\no\r\n$-1\r\n*-1\r\n*2\r\n$1\r\na\r\n*1\r\n:1\r\n");
        assert_eq!(frames.len(), 7);
        assert!(matches!(&frames[0], Frame::SimpleString { data, .. } if &data[..] == b"OK"));
        assert!(matches!(&frames[1], Frame::SimpleError { data, .. } if &data[..] == "ERR bad"));
        assert!(matches!(&frames[2], Frame::Number { data: -12, .. }));
        assert!(matches!(&frames[3], Frame::BlobString { data, .. } if &data[..] == b"he\r\no"));
        assert!(matches!(frames[4], Frame::Null));
        assert!(matches!(frames[5], Frame::Null));
        let Frame::Array { data, .. } = &frames[6] else {
            panic!("not an array: {:?}", frames[6]);
        };
        assert_eq!(data.len(), 2);
        assert!(matches!(&data[1], Frame::Array { data, .. } if data.len() == 1));
    }

    #[test]
    fn incomplete_replies_wait_for_more_bytes() {
        let wire = b"*2\r\n$5\r\nhello\r\n:42\r\n";
        for cut in 0..wire.len() {
            assert_eq!(reply_len(&wire[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert_eq!(reply_len(wire).unwrap(), Some(wire.len()));
    }

    #[test]
    fn non_utf8_errors_keep_their_bytes() {
        let frames = decode_all(b"-ERR \xff\xfe\r\n");
        assert!(
            matches!(&frames[0], Frame::BlobError { data, .. } if &data[..] == b"ERR \xff\xfe")
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(reply_len(b"?what\r\n").is_err());
        assert!(reply_len(b"$x\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2);
        assert!(reply_len(deep.as_bytes()).is_err());
    }
}
