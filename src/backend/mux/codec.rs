//! RESP2 for the multiplexed connections: commands out, reply frames in.
//!
//! Replies become the same [`Frame`]s fred hands back for a RESP2 connection
//! (`+` simple string, `-` simple error, `:` number, `$` blob string, `*` array,
//! `$-1`/`*-1` null), so every reply writer works on either path. Unlike fred, an
//! error reply that is not UTF-8 does not break the connection: it becomes a
//! `BlobError` with its bytes.

use bytes::{BufMut, Bytes};

use crate::protocol::reply::{self, Frame};

/// A reply Redis should never send: the connection cannot be trusted after it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid reply from Redis: {0}")]
pub struct ProtocolError(&'static str);

/// Appends one command as a RESP2 array of bulk strings (every restash
/// connection encodes commands with this: the multiplexer and the Pub/Sub links).
pub fn encode_command<A: AsRef<[u8]>>(out: &mut impl BufMut, args: &[A]) {
    put_header(out, b'*', args.len());
    for arg in args {
        let arg = arg.as_ref();
        put_header(out, b'$', arg.len());
        out.put_slice(arg);
        out.put_slice(b"\r\n");
    }
}

fn put_header(out: &mut impl BufMut, prefix: u8, len: usize) {
    out.put_u8(prefix);
    out.put_slice(itoa::Buffer::new().format(len).as_bytes());
    out.put_slice(b"\r\n");
}

/// The length of the first complete reply in `buf`, `None` if more bytes are needed.
pub fn reply_len(buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
    ReplyScan::default().next(buf)
}

/// Measures replies as their bytes arrive, resuming where the last look stopped: a
/// reply of a million items that comes in over a hundred reads is walked once, not
/// once per read.
///
/// Iterative, so that replies nested any number of levels deep (a Lua script may
/// return deeply nested tables) neither overflow the stack nor are refused.
#[derive(Debug, Default)]
pub struct ReplyScan {
    /// Items still expected by each enclosing array of the reply being measured.
    open: Vec<i64>,
    /// How far into that reply the complete items reach.
    at: usize,
}

impl ReplyScan {
    /// The length of the first complete reply in `buf`, which starts where the reply
    /// of the previous look started; `None` if more bytes are needed (the next look
    /// must see the same bytes, and more). After `Some`, the next look starts afresh.
    pub fn next(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let found = self.walk(buf);
        if !matches!(found, Ok(None)) {
            *self = ReplyScan::default();
        }
        found
    }

    fn walk(&mut self, buf: &[u8]) -> Result<Option<usize>, ProtocolError> {
        let (open, at) = (&mut self.open, &mut self.at);
        loop {
            let Some(header) = header_at(buf, *at)? else {
                return Ok(None);
            };
            *at = match header {
                Header::Line { end } | Header::NullBulk { end } => end,
                Header::Bulk { start, len } => {
                    let end = start
                        .checked_add(len)
                        .and_then(|e| e.checked_add(2))
                        .ok_or(ProtocolError("a length is too large"))?;
                    if buf.len() < end {
                        return Ok(None);
                    }
                    // Out of step with Redis: better a lost connection than a wrong reply.
                    if &buf[end - 2..end] != b"\r\n" {
                        return Err(ProtocolError("a bulk string does not end with CRLF"));
                    }
                    end
                }
                Header::Array { start, count } if count > 0 => {
                    open.push(count);
                    *at = start;
                    continue;
                }
                Header::Array { start, .. } => start,
            };
            // One item finished: close every array it completes.
            loop {
                match open.last_mut() {
                    None => return Ok(Some(*at)),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        open.pop();
                    }
                }
            }
        }
    }
}

/// Decodes one complete reply (as measured by [`reply_len`]) from the start of `buf`.
pub fn decode(buf: &Bytes) -> Result<Frame, ProtocolError> {
    // Arrays being filled, innermost last, with the items they still expect.
    let mut open: Vec<(Vec<Frame>, usize)> = Vec::new();
    let mut at = 0;
    loop {
        let header = header_at(buf, at)?.ok_or(ProtocolError("truncated reply"))?;
        let (mut frame, next) = match header {
            Header::Line { end } => (line_frame(buf, at, end - 2)?, end),
            Header::Bulk { start, len } => {
                let end = start
                    .checked_add(len)
                    .ok_or(ProtocolError("a length is too large"))?;
                if buf.len() < end.saturating_add(2) {
                    return Err(ProtocolError("truncated reply"));
                }
                let data = buf.slice(start..end);
                let frame = Frame::BlobString {
                    data,
                    attributes: None,
                };
                (frame, end + 2)
            }
            Header::Array { start, count } if count > 0 => {
                // Each item takes at least 3 bytes; never trust a count beyond that.
                let count = count as usize;
                let items = Vec::with_capacity(count.min(buf.len() / 3));
                open.push((items, count));
                at = start;
                continue;
            }
            Header::Array { start, count: 0 } => (reply::array(Vec::new()), start),
            Header::Array { start, .. } => (Frame::Null, start),
            Header::NullBulk { end } => (Frame::Null, end),
        };
        at = next;
        // Put the finished item in its array; a full array is itself a finished item.
        loop {
            match open.last_mut() {
                None => return Ok(frame),
                Some((items, expected)) => {
                    items.push(frame);
                    if items.len() < *expected {
                        break;
                    }
                    let (items, _) = open.pop().ok_or(ProtocolError("unbalanced arrays"))?;
                    frame = reply::array(items);
                }
            }
        }
    }
}

/// The header line of the reply at `at`.
enum Header {
    /// `+`, `-` or `:`: the whole reply is the line; `end` is past its `\r\n`.
    Line { end: usize },
    /// `$n`: `len` bytes from `start`, then `\r\n`.
    Bulk { start: usize, len: usize },
    /// `$-1`.
    NullBulk { end: usize },
    /// `*n`: `count` items from `start` (`-1`: null).
    Array { start: usize, count: i64 },
}

fn header_at(buf: &[u8], at: usize) -> Result<Option<Header>, ProtocolError> {
    let Some(&kind) = buf.get(at) else {
        return Ok(None);
    };
    let Some(end) = line_end(buf, at + 1) else {
        return Ok(None);
    };
    let after_line = end + 2;
    Ok(Some(match kind {
        b'+' | b'-' | b':' => Header::Line { end: after_line },
        b'$' => match parse_int(&buf[at + 1..end])? {
            len if len < 0 => Header::NullBulk { end: after_line },
            len => Header::Bulk {
                start: after_line,
                len: usize::try_from(len).map_err(|_| ProtocolError("a length is too large"))?,
            },
        },
        b'*' => Header::Array {
            start: after_line,
            count: parse_int(&buf[at + 1..end])?,
        },
        _ => return Err(ProtocolError("unknown reply type")),
    }))
}

/// Where the line starting at `at` ends: the index of its `\r` (the `\n` must be there too).
fn line_end(buf: &[u8], at: usize) -> Option<usize> {
    let rest = buf.get(at..)?;
    let cr = rest.iter().position(|&b| b == b'\r')?;
    (rest.len() > cr + 1).then_some(at + cr)
}

fn parse_int(digits: &[u8]) -> Result<i64, ProtocolError> {
    const NOT_A_NUMBER: ProtocolError = ProtocolError("a length or integer is not a number");
    let (negative, magnitude) = match digits {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, digits),
    };
    if magnitude.is_empty() {
        return Err(NOT_A_NUMBER);
    }
    // Accumulated negatively so that i64::MIN parses too.
    let mut value: i64 = 0;
    for &byte in magnitude {
        let digit = match byte {
            b'0'..=b'9' => i64::from(byte - b'0'),
            _ => return Err(NOT_A_NUMBER),
        };
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_sub(digit))
            .ok_or(NOT_A_NUMBER)?;
    }
    if negative {
        Ok(value)
    } else {
        value.checked_neg().ok_or(NOT_A_NUMBER)
    }
}

/// A `+`, `-` or `:` reply whose type byte is at `at` and whose line ends (`\r`) at `end`.
fn line_frame(buf: &Bytes, at: usize, end: usize) -> Result<Frame, ProtocolError> {
    let line = at + 1..end;
    Ok(match buf[at] {
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
        _ => Frame::Number {
            data: parse_int(&buf[line])?,
            attributes: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

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

    /// Integers are read as `str::parse::<i64>` reads them, limits and signs included.
    #[test]
    fn integers_parse_as_the_standard_library_parses_them() {
        let cases = [
            "0",
            "7",
            "-1",
            "+5",
            "42",
            "-0",
            "007",
            "9223372036854775807",
            "-9223372036854775808",
            "9223372036854775808",
            "-9223372036854775809",
            "",
            "-",
            "+",
            "1a",
            " 1",
            "1 ",
            "--1",
            "+-1",
            "١",
        ];
        for case in cases {
            let expected = case.parse::<i64>().ok();
            assert_eq!(parse_int(case.as_bytes()).ok(), expected, "{case:?}");
        }
    }

    /// Fed a few bytes at a time, as reads deliver them, a scan finds the same reply
    /// ends as one look at the whole buffer, and walks each byte about once.
    #[test]
    fn a_scan_resumes_across_reads() {
        let mut replies = Vec::new();
        replies.extend_from_slice(b"*3\r\n$1\r\na\r\n*2\r\n:1\r\n$-1\r\n+OK\r\n");
        replies.extend_from_slice(b"-ERR x\r\n$5\r\nhello\r\n");
        let whole: Vec<usize> = {
            let (mut at, mut ends) = (0, Vec::new());
            while let Some(len) = reply_len(&replies[at..]).expect("valid") {
                at += len;
                ends.push(at);
            }
            ends
        };
        assert_eq!(whole.len(), 3);
        for step in 1..=7 {
            let (mut scan, mut start, mut ends) = (ReplyScan::default(), 0, Vec::new());
            let mut seen = 0;
            while seen < replies.len() {
                seen = (seen + step).min(replies.len());
                while let Some(len) = scan.next(&replies[start..seen]).expect("valid") {
                    start += len;
                    ends.push(start);
                }
            }
            assert_eq!(ends, whole, "{step} bytes per read");
        }
        // A large array arriving in many reads: the scan keeps its place.
        let mut big = b"*100000\r\n".to_vec();
        for _ in 0..100_000 {
            big.extend_from_slice(b":7\r\n");
        }
        let mut scan = ReplyScan::default();
        for end in (4096..big.len()).step_by(4096) {
            assert_eq!(scan.next(&big[..end]), Ok(None));
            assert!(
                scan.at + 4 >= end,
                "the scan fell behind: {} of {end}",
                scan.at
            );
        }
        assert_eq!(scan.next(&big), Ok(Some(big.len())));
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
        assert!(reply_len(b"$9223372036854775807\r\nab\r\n").is_ok_and(|l| l.is_none()));
        // A bulk string longer than its header says: the stream is out of step.
        assert_eq!(
            reply_len(b"$3\r\nabcd\r\n"),
            Err(ProtocolError("a bulk string does not end with CRLF"))
        );
        assert!(reply_len(b"*2\r\n$1\r\nab\r\n:1\r\n").is_err());
    }

    #[test]
    fn deep_nesting_is_fine() {
        // Lua can return about 2,000 levels; dropping and writing frames still recurses.
        let depth = 3_000;
        let wire = format!("{}:7\r\n*0\r\n", "*1\r\n".repeat(depth));
        let frames = decode_all(wire.as_bytes());
        assert_eq!(frames.len(), 2);
        let mut frame = &frames[0];
        for _ in 0..depth {
            let Frame::Array { data, .. } = frame else {
                panic!("not an array");
            };
            frame = &data[0];
        }
        assert!(matches!(frame, Frame::Number { data: 7, .. }));
        assert!(matches!(&frames[1], Frame::Array { data, .. } if data.is_empty()));
    }
}
