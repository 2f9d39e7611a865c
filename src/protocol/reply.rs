//! Reply encoding: Redis frames to Upstash JSON, base64 JSON, or raw RESP2.
//!
//! | Redis reply            | JSON               | base64 mode                         |
//! |------------------------|--------------------|-------------------------------------|
//! | `+OK` at the top       | `"OK"`             | `"OK"` (the one exception)          |
//! | other (bulk) strings   | `"bar"` (lossy UTF-8) | `"YmFy"`                         |
//! | nil                    | `null`             | `null`                              |
//! | integer                | number             | number                              |
//! | array                  | array              | array, every string encoded         |
//! | error at the top       | `{"error": …}`     | not encoded                         |
//! | error inside an array  | its text as a string | encoded like any string           |
//!
//! Writers append to a caller-owned buffer so a whole pipeline answer is built in
//! one allocation.

use base64::Engine;
use bytes::Bytes;

pub use fred::types::Resp3Frame as Frame;

/// How strings in a `result` are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StringEncoding {
    /// Strings as JSON text; invalid UTF-8 becomes U+FFFD.
    #[default]
    Utf8,
    /// Strings as standard base64 of their exact bytes (`Upstash-Encoding: base64`).
    Base64,
}

/// The error text of a top-level error frame, if `frame` is one.
pub fn error_text(frame: &Frame) -> Option<String> {
    match frame {
        Frame::SimpleError { data, .. } => Some(data.to_string()),
        Frame::BlobError { data, .. } => Some(String::from_utf8_lossy(data).into_owned()),
        _ => None,
    }
}

/// Writes `{"result": …}`, or `{"error": …}` when the frame is an error reply.
pub fn write_item(out: &mut Vec<u8>, frame: &Frame, encoding: StringEncoding) {
    match error_text(frame) {
        Some(text) => write_error_object(out, &text),
        None => {
            out.extend_from_slice(b"{\"result\":");
            write_value(out, frame, encoding, true);
            out.push(b'}');
        }
    }
}

/// Writes `{"error": "<text>"}`.
pub fn write_error_object(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(b"{\"error\":");
    write_json_str(out, text);
    out.push(b'}');
}

/// Writes one value. `top_level` enables the `"OK"` exception of base64 mode.
pub fn write_value(out: &mut Vec<u8>, frame: &Frame, encoding: StringEncoding, top_level: bool) {
    match frame {
        Frame::Null => out.extend_from_slice(b"null"),
        Frame::Number { data, .. } => {
            out.extend_from_slice(itoa::Buffer::new().format(*data).as_bytes())
        }
        Frame::SimpleString { data, .. }
        | Frame::BlobString { data, .. }
        | Frame::VerbatimString { data, .. }
        | Frame::BigNumber { data, .. } => write_string(out, data, encoding, top_level),
        Frame::SimpleError { data, .. } => write_string(out, data.as_bytes(), encoding, false),
        Frame::BlobError { data, .. } => write_string(out, data, encoding, false),
        Frame::Double { data, .. } => {
            let text = format_double(*data);
            write_string(out, text.as_bytes(), encoding, false)
        }
        Frame::Boolean { data, .. } => out.push(if *data { b'1' } else { b'0' }),
        Frame::Array { data, .. } | Frame::Push { data, .. } => {
            write_array(out, data.iter(), encoding)
        }
        Frame::Set { data, .. } => write_array(out, data.iter(), encoding),
        Frame::Map { data, .. } => {
            // RESP2 clients expect maps flattened to [k1, v1, k2, v2, …].
            out.push(b'[');
            for (i, (key, value)) in data.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, key, encoding, false);
                out.push(b',');
                write_value(out, value, encoding, false);
            }
            out.push(b']');
        }
        _ => out.extend_from_slice(b"null"),
    }
}

fn write_array<'a>(
    out: &mut Vec<u8>,
    items: impl Iterator<Item = &'a Frame>,
    encoding: StringEncoding,
) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_value(out, item, encoding, false);
    }
    out.push(b']');
}

fn write_string(out: &mut Vec<u8>, data: &[u8], encoding: StringEncoding, top_level: bool) {
    match encoding {
        StringEncoding::Base64 if !(top_level && data == b"OK") => {
            out.push(b'"');
            let start = out.len();
            let len = base64::encoded_len(data.len(), true).unwrap_or(0);
            out.resize(start + len, 0);
            let written = base64::engine::general_purpose::STANDARD
                .encode_slice(data, &mut out[start..])
                .unwrap_or(0);
            out.truncate(start + written);
            out.push(b'"');
        }
        _ if is_plain_json_text(data) => {
            out.reserve(data.len() + 2);
            out.push(b'"');
            out.extend_from_slice(data);
            out.push(b'"');
        }
        _ => match std::str::from_utf8(data) {
            Ok(text) => write_json_str(out, text),
            Err(_) => write_json_str(out, &String::from_utf8_lossy(data)),
        },
    }
}

/// Whether `data` can stand between JSON quotes as it is: printable ASCII with no
/// `"` or `\`. Checked 32 bytes at a time without branches, which the compiler
/// turns into vector instructions; most values pass and are copied whole.
fn is_plain_json_text(data: &[u8]) -> bool {
    data.chunks(32).all(|chunk| {
        chunk.iter().fold(true, |plain, &b| {
            // 0x20..=0x7e, in one comparison.
            let printable = b.wrapping_sub(0x20) < 0x5f;
            plain & printable & (b != b'"') & (b != b'\\')
        })
    })
}

/// Appends `text` as a JSON string literal with escaping.
pub fn write_json_str(out: &mut Vec<u8>, text: &str) {
    // Writing into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, text);
}

fn format_double(value: f64) -> String {
    if value.is_infinite() {
        if value > 0.0 { "inf" } else { "-inf" }.to_string()
    } else if value.fract() == 0.0 && value.abs() < 1e17 {
        format!("{}", value as i64)
    } else {
        ryu::Buffer::new().format(value).to_string()
    }
}

/// Writes the frame as RESP2 bytes (`Upstash-Response-Format: resp2`).
pub fn write_resp2(out: &mut Vec<u8>, frame: &Frame) {
    match frame {
        Frame::Null => out.extend_from_slice(b"$-1\r\n"),
        Frame::SimpleString { data, .. } => {
            out.push(b'+');
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Frame::SimpleError { data, .. } => {
            out.push(b'-');
            out.extend_from_slice(data.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Frame::BlobError { data, .. } => {
            out.push(b'-');
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        Frame::Number { data, .. } => {
            out.push(b':');
            out.extend_from_slice(itoa::Buffer::new().format(*data).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Frame::BlobString { data, .. }
        | Frame::VerbatimString { data, .. }
        | Frame::BigNumber { data, .. } => write_resp2_bulk(out, data),
        Frame::Double { data, .. } => write_resp2_bulk(out, format_double(*data).as_bytes()),
        Frame::Boolean { data, .. } => {
            out.extend_from_slice(if *data { b":1\r\n" } else { b":0\r\n" })
        }
        Frame::Array { data, .. } | Frame::Push { data, .. } => {
            write_resp2_len(out, b'*', data.len());
            data.iter().for_each(|f| write_resp2(out, f));
        }
        Frame::Set { data, .. } => {
            write_resp2_len(out, b'*', data.len());
            data.iter().for_each(|f| write_resp2(out, f));
        }
        Frame::Map { data, .. } => {
            write_resp2_len(out, b'*', data.len() * 2);
            for (k, v) in data.iter() {
                write_resp2(out, k);
                write_resp2(out, v);
            }
        }
        _ => out.extend_from_slice(b"$-1\r\n"),
    }
}

fn write_resp2_bulk(out: &mut Vec<u8>, data: &[u8]) {
    write_resp2_len(out, b'$', data.len());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

fn write_resp2_len(out: &mut Vec<u8>, prefix: u8, len: usize) {
    out.push(prefix);
    out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// A bulk-string frame (used to build synthetic replies such as a script's SHA).
pub fn bulk(data: impl Into<Bytes>) -> Frame {
    Frame::BlobString {
        data: data.into(),
        attributes: None,
    }
}

/// An array frame.
pub fn array(items: Vec<Frame>) -> Frame {
    Frame::Array {
        data: items,
        attributes: None,
    }
}

/// An error frame carrying `text` verbatim.
pub fn error(text: impl Into<String>) -> Frame {
    Frame::SimpleError {
        data: text.into().into(),
        attributes: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simple(s: &'static str) -> Frame {
        Frame::SimpleString {
            data: Bytes::from_static(s.as_bytes()),
            attributes: None,
        }
    }

    fn int(n: i64) -> Frame {
        Frame::Number {
            data: n,
            attributes: None,
        }
    }

    fn json(frame: &Frame, encoding: StringEncoding) -> String {
        let mut out = Vec::new();
        write_item(&mut out, frame, encoding);
        String::from_utf8(out).unwrap()
    }

    /// The copy-as-is path writes exactly what serde_json's escaping writes.
    #[test]
    fn plain_strings_are_copied_and_the_rest_escaped_as_serde_json_does() {
        let mut samples: Vec<String> = (0u8..128).map(|b| (b as char).to_string()).collect();
        samples.extend(
            [
                "",
                "value",
                "x".repeat(100).as_str(),
                &format!("{}\"{}", "a".repeat(40), "b".repeat(40)),
                &format!("{}\\", "c".repeat(64)),
                &format!("{}\n", "d".repeat(31)),
                "é 😀",
                "\u{7f}",
            ]
            .map(String::from),
        );
        for sample in samples {
            let mut out = Vec::new();
            write_string(&mut out, sample.as_bytes(), StringEncoding::Utf8, false);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(&sample).unwrap(),
                "{sample:?}"
            );
        }
    }

    #[test]
    fn plain_values() {
        use StringEncoding::Utf8;
        assert_eq!(json(&simple("OK"), Utf8), r#"{"result":"OK"}"#);
        assert_eq!(json(&bulk("bar"), Utf8), r#"{"result":"bar"}"#);
        assert_eq!(json(&Frame::Null, Utf8), r#"{"result":null}"#);
        assert_eq!(json(&int(-7), Utf8), r#"{"result":-7}"#);
        assert_eq!(
            json(&int(i64::MAX), Utf8),
            r#"{"result":9223372036854775807}"#
        );
        assert_eq!(json(&bulk("1.5"), Utf8), r#"{"result":"1.5"}"#);
        assert_eq!(
            json(&bulk(&b"a\xffb"[..]), Utf8),
            "{\"result\":\"a\u{fffd}b\"}"
        );
        assert_eq!(json(&bulk("q\"\n"), Utf8), r#"{"result":"q\"\n"}"#);
        assert_eq!(
            json(&array(vec![bulk("a"), Frame::Null, int(1)]), Utf8),
            r#"{"result":["a",null,1]}"#
        );
    }

    #[test]
    fn errors_top_level_and_nested() {
        use StringEncoding::*;
        assert_eq!(
            json(
                &error("ERR wrong number of arguments for 'get' command"),
                Base64
            ),
            r#"{"error":"ERR wrong number of arguments for 'get' command"}"#
        );
        assert_eq!(
            json(&array(vec![error("ERR x"), int(1)]), Utf8),
            r#"{"result":["ERR x",1]}"#
        );
        assert_eq!(
            json(&array(vec![error("ERR x")]), Base64),
            r#"{"result":["RVJSIHg="]}"#
        );
    }

    #[test]
    fn base64_rules() {
        use StringEncoding::Base64;
        assert_eq!(json(&simple("OK"), Base64), r#"{"result":"OK"}"#);
        assert_eq!(json(&simple("PONG"), Base64), r#"{"result":"UE9ORw=="}"#);
        assert_eq!(json(&bulk("bar"), Base64), r#"{"result":"YmFy"}"#);
        assert_eq!(json(&bulk(""), Base64), r#"{"result":""}"#);
        assert_eq!(
            json(&bulk(&b"\x00\xff"[..]), Base64),
            r#"{"result":"AP8="}"#
        );
        assert_eq!(json(&Frame::Null, Base64), r#"{"result":null}"#);
        assert_eq!(json(&int(3), Base64), r#"{"result":3}"#);
        assert_eq!(
            json(&array(vec![simple("OK"), bulk("test"), int(2)]), Base64),
            r#"{"result":["T0s=","dGVzdA==",2]}"#
        );
    }

    #[test]
    fn resp2_bytes() {
        let mut out = Vec::new();
        write_resp2(
            &mut out,
            &array(vec![
                simple("OK"),
                bulk("ab"),
                int(3),
                Frame::Null,
                error("ERR e"),
            ]),
        );
        assert_eq!(out, b"*5\r\n+OK\r\n$2\r\nab\r\n:3\r\n$-1\r\n-ERR e\r\n");
    }
}
