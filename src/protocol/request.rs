//! Request parsing: JSON command arrays, pipelines and path-style commands.
//!
//! ```text
//! POST /           ["SET", "key", "value", "EX", 100]
//! POST /pipeline   [["SET", "a", "1"], ["GET", "a"]]
//! GET  /set/key/value?EX=100        -> SET key value EX 100
//! POST /set/key?EX=100  body=V      -> SET key V EX 100
//! ```
//!
//! JSON arguments may be strings, numbers or booleans. Numbers are forwarded as
//! their literal JSON text (`18446744073709551615`, `1e+21` and `0.1` reach
//! Redis unchanged); booleans become `"true"`/`"false"`. Anything else is a
//! [`RequestError`].

use std::borrow::Cow;

use bytes::Bytes;
use compact_str::CompactString;
use percent_encoding::percent_decode;
use serde_json::value::RawValue;

/// One Redis command: the name followed by its arguments, as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// `args[0]` is the command name exactly as the client sent it.
    pub args: Vec<Bytes>,
}

impl Command {
    /// Builds a command from string-like parts (handy in tests and internal calls).
    pub fn from_parts<I, T>(parts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<Bytes>,
    {
        Command {
            args: parts.into_iter().map(Into::into).collect(),
        }
    }

    /// The command name in lower case (`get`, `json.set`), used for policy lookups.
    /// Names up to 24 bytes (all of Redis' own) are held inline, without allocating.
    pub fn name_lowercase(&self) -> CompactString {
        /// The longest name `CompactString` holds inline.
        const INLINE: usize = 24;
        let Some(first) = self.args.first() else {
            return CompactString::default();
        };
        if first.len() <= INLINE && first.is_ascii() {
            // Every request's path: lower-cased on the stack (issue 7).
            let mut lower = [0u8; INLINE];
            let lower = &mut lower[..first.len()];
            lower.copy_from_slice(first);
            lower.make_ascii_lowercase();
            if let Ok(text) = std::str::from_utf8(lower) {
                return CompactString::new(text);
            }
        }
        let mut name = CompactString::from_utf8_lossy(first);
        name.make_ascii_lowercase();
        name
    }

    /// The argument at `index` (0 is the name) lower-cased, if present and UTF-8.
    pub fn arg_lowercase(&self, index: usize) -> Option<String> {
        self.args
            .get(index)
            .and_then(|a| std::str::from_utf8(a).ok())
            .map(str::to_ascii_lowercase)
    }
}

/// Why a request body or path could not become a command.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    /// The body is not valid JSON.
    #[error("ERR failed to parse the request body as JSON: {0}")]
    MalformedJson(String),
    /// The body is valid JSON but not an array.
    #[error("ERR the request body must be a JSON array of command arguments, e.g. [\"SET\",\"key\",\"value\"]")]
    NotAnArray,
    /// A pipeline or transaction body is not an array of arrays.
    #[error("ERR the request body must be a JSON array of commands, each a JSON array, e.g. [[\"SET\",\"a\",\"1\"],[\"GET\",\"a\"]]")]
    NotAnArrayOfCommands,
    /// `[]` as a command.
    #[error("ERR empty command: the array must start with a command name")]
    EmptyCommand,
    /// `[]` as a pipeline or transaction.
    #[error("ERR empty pipeline: send at least one command")]
    EmptyPipeline,
    /// The first element is not a non-empty string.
    #[error("ERR the command name must be a non-empty string without spaces")]
    BadCommandName,
    /// An argument of a type Redis cannot take.
    #[error("ERR argument {position} is {kind}; arguments must be strings, numbers or booleans")]
    BadArgument {
        /// 1-based position in the command array (the name is 1).
        position: usize,
        /// `null`, `an array` or `an object`.
        kind: &'static str,
    },
}

/// Parses `POST /` bodies: one JSON array of arguments.
///
/// Arguments are slices of `body` (no copy) unless they contain JSON escapes.
pub fn parse_command_json(body: impl Into<Bytes>) -> Result<Command, RequestError> {
    let body = body.into();
    super::json_body::command(&body, body_text(&body)?)
}

/// Parses `/pipeline` and `/multi-exec` bodies: a JSON array of command arrays.
pub fn parse_pipeline_json(body: impl Into<Bytes>) -> Result<Vec<Command>, RequestError> {
    let body = body.into();
    super::json_body::pipeline(&body, body_text(&body)?)
}

/// Parses a `/pipeline` body item by item: an item that is not a command is that
/// item's error; only a body that is not a JSON array of items fails as a whole.
pub fn parse_pipeline_items_json(
    body: impl Into<Bytes>,
) -> Result<Vec<Result<Command, RequestError>>, RequestError> {
    let body = body.into();
    super::json_body::pipeline_items(&body, body_text(&body)?)
}

/// The body as text, refused when it is not UTF-8 or holds nothing but whitespace.
fn body_text(body: &Bytes) -> Result<&str, RequestError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| RequestError::MalformedJson("the body is not valid UTF-8".into()))?;
    if text.trim_start().is_empty() {
        return Err(RequestError::MalformedJson("the body is empty".into()));
    }
    Ok(text)
}

/// A command name is non-empty and has no whitespace or control characters
/// (fred splits names on spaces, which would let `"FLUSHALL x"` hide a command).
pub fn is_valid_name_bytes(name: &[u8]) -> bool {
    !name.is_empty() && name.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80)
}

/// One argument; `raw` borrows from `body`, so plain strings and numbers are
/// slices of it.
pub(super) fn argument_from_raw(
    body: &Bytes,
    raw: &RawValue,
    position: usize,
) -> Result<Bytes, RequestError> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'"') => {
            let inner = &text.as_bytes()[1..text.len() - 1];
            if !inner.contains(&b'\\') {
                // Valid JSON without escapes: the bytes between the quotes are the string.
                return Ok(body.slice_ref(inner));
            }
            // The body already parsed, so only a lone surrogate (`"\ud83d"`, text cut
            // inside an emoji; JavaScript's JSON.stringify writes them) fails here: it
            // becomes U+FFFD, as in Go's and JavaScript's own JSON decoders.
            let s = serde_json::from_str::<std::borrow::Cow<'_, str>>(text)
                .map_or_else(|_| decode_lossy(inner), std::borrow::Cow::into_owned);
            Ok(Bytes::from(s))
        }
        // Numbers keep their literal text: no round trip through f64.
        Some(b'-' | b'0'..=b'9') => Ok(body.slice_ref(text.as_bytes())),
        Some(b't') => Ok(Bytes::from_static(b"true")),
        Some(b'f') => Ok(Bytes::from_static(b"false")),
        Some(b'n') => Err(RequestError::BadArgument {
            position,
            kind: "null",
        }),
        Some(b'[') => Err(RequestError::BadArgument {
            position,
            kind: "an array",
        }),
        _ => Err(RequestError::BadArgument {
            position,
            kind: "an object",
        }),
    }
}

/// Decodes the inside of a JSON string whose escapes are well formed, turning each
/// `\u` escape that is half of a surrogate pair without its other half into U+FFFD.
fn decode_lossy(inner: &[u8]) -> String {
    let mut out = String::with_capacity(inner.len());
    let mut units: Vec<u16> = Vec::new();
    let flush = |units: &mut Vec<u16>, out: &mut String| {
        out.extend(char::decode_utf16(units.drain(..)).map(|c| c.unwrap_or('\u{FFFD}')));
    };
    let mut i = 0;
    while i < inner.len() {
        if inner[i] == b'\\' && inner.get(i + 1) == Some(&b'u') {
            let hex = inner
                .get(i + 2..i + 6)
                .and_then(|h| std::str::from_utf8(h).ok());
            if let Some(unit) = hex.and_then(|h| u16::from_str_radix(h, 16).ok()) {
                units.push(unit);
                i += 6;
                continue;
            }
        }
        flush(&mut units, &mut out);
        if inner[i] == b'\\' {
            let escaped = inner.get(i + 1).copied().unwrap_or(b'\\');
            out.push(match escaped {
                b'b' => '\u{8}',
                b'f' => '\u{c}',
                b'n' => '\n',
                b'r' => '\r',
                b't' => '\t',
                other => char::from(other),
            });
            i += 2;
        } else {
            // Plain text: copy up to the next escape (the body is UTF-8).
            let end = inner[i..]
                .iter()
                .position(|&b| b == b'\\')
                .map_or(inner.len(), |n| i + n);
            out.push_str(&String::from_utf8_lossy(&inner[i..end]));
            i = end;
        }
    }
    flush(&mut units, &mut out);
    out
}

/// Parses a path-style command.
///
/// `raw_path` is the undecoded request path (`/set/a%2Fb/c`), `body` an optional
/// request body appended as one final argument when non-empty, and `raw_query`
/// the undecoded query string whose pairs follow the body (`_token` excluded).
pub fn parse_path_command(
    raw_path: &str,
    body: Option<Bytes>,
    raw_query: Option<&str>,
) -> Result<Command, RequestError> {
    let trimmed = raw_path.strip_prefix('/').unwrap_or(raw_path);
    // Room for every segment and a body argument.
    let mut args: Vec<Bytes> = Vec::with_capacity(trimmed.matches('/').count() + 2);
    // One allocation of the exact size per argument (a decoded one is copied once more).
    args.extend(trimmed.split('/').map(|segment| {
        let decoded: Cow<[u8]> = percent_decode(segment.as_bytes()).into();
        Bytes::copy_from_slice(&decoded)
    }));
    // `/get/key/` means `GET key`: one trailing slash adds no empty argument.
    if args.len() > 1 && args.last().is_some_and(|last| last.is_empty()) {
        args.pop();
    }
    if !args.first().is_some_and(|n| is_valid_name_bytes(n)) {
        return Err(if args.first().is_some_and(|n| n.is_empty()) {
            RequestError::EmptyCommand
        } else {
            RequestError::BadCommandName
        });
    }
    if let Some(body) = body.filter(|b| !b.is_empty()) {
        args.push(body);
    }
    if let Some(query) = raw_query {
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            if key == "_token" {
                continue;
            }
            args.push(Bytes::from(key.into_owned()));
            if !value.is_empty() {
                args.push(Bytes::from(value.into_owned()));
            }
        }
    }
    Ok(Command { args })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The tests' bodies are byte literals; the parsers take `Bytes`.
    fn parse_command_json(body: &[u8]) -> Result<Command, RequestError> {
        super::parse_command_json(Bytes::copy_from_slice(body))
    }

    fn parse_pipeline_json(body: &[u8]) -> Result<Vec<Command>, RequestError> {
        super::parse_pipeline_json(Bytes::copy_from_slice(body))
    }

    fn strings(cmd: &Command) -> Vec<String> {
        cmd.args
            .iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    #[test]
    fn names_are_lower_cased_short_long_or_not_utf8() {
        let name = |first: &[u8]| {
            Command {
                args: vec![Bytes::copy_from_slice(first)],
            }
            .name_lowercase()
        };
        assert_eq!(name(b"GET"), "get");
        assert_eq!(name(b"JSON.SET"), "json.set");
        let long = "X".repeat(40);
        assert_eq!(name(long.as_bytes()), "x".repeat(40));
        assert_eq!(name("ÉCHO".as_bytes()), "Écho");
        assert_eq!(name(b"G\xffT"), "g\u{fffd}t");
        assert_eq!(Command { args: Vec::new() }.name_lowercase(), "");
    }

    #[test]
    fn lone_surrogates_become_replacement_characters() {
        let cmd =
            parse_command_json(&br#"["SET","k","a\ud83d b\ude00\n\ud83d\ude00\"\u00e9"]"#[..])
                .expect("a lone surrogate is no error");
        assert_eq!(strings(&cmd)[2], "a\u{FFFD} b\u{FFFD}\n\u{1F600}\"\u{e9}");
    }

    #[test]
    fn json_strings_numbers_and_booleans() {
        let cmd = parse_command_json(br#"["SET","k","v","EX",100,true,false]"#).unwrap();
        assert_eq!(
            strings(&cmd),
            ["SET", "k", "v", "EX", "100", "true", "false"]
        );
    }

    #[test]
    fn json_numbers_keep_their_literal_text() {
        let cmd =
            parse_command_json(br#"["SET","k",18446744073709551615,1e+21,0.1,-5,1E-05]"#).unwrap();
        assert_eq!(
            strings(&cmd)[2..],
            ["18446744073709551615", "1e+21", "0.1", "-5", "1E-05"]
        );
    }

    #[test]
    fn json_unicode_and_escapes() {
        let cmd = parse_command_json(r#"["SET","k","é\u00e9\n\"😀"]"#.as_bytes()).unwrap();
        assert_eq!(strings(&cmd)[2], "éé\n\"😀");
    }

    #[test]
    fn json_bad_inputs() {
        assert!(matches!(
            parse_command_json(b"[1,"),
            Err(RequestError::MalformedJson(_))
        ));
        assert!(matches!(
            parse_command_json(b""),
            Err(RequestError::MalformedJson(_))
        ));
        assert_eq!(
            parse_command_json(br#"{"a":1}"#),
            Err(RequestError::NotAnArray)
        );
        assert_eq!(parse_command_json(b"[]"), Err(RequestError::EmptyCommand));
        assert_eq!(
            parse_command_json(br#"["SET","k",null]"#),
            Err(RequestError::BadArgument {
                position: 3,
                kind: "null"
            })
        );
        assert_eq!(
            parse_command_json(br#"["SET",["k"]]"#),
            Err(RequestError::BadArgument {
                position: 2,
                kind: "an array"
            })
        );
        assert_eq!(
            parse_command_json(br#"["SET","k",{"a":1}]"#),
            Err(RequestError::BadArgument {
                position: 3,
                kind: "an object"
            })
        );
        assert_eq!(
            parse_command_json(br#"[1,"k"]"#),
            Err(RequestError::BadCommandName)
        );
        assert_eq!(
            parse_command_json(br#"["","k"]"#),
            Err(RequestError::BadCommandName)
        );
        assert_eq!(
            parse_command_json(br#"["FLUSHALL x"]"#),
            Err(RequestError::BadCommandName)
        );
    }

    #[test]
    fn pipelines() {
        let cmds = parse_pipeline_json(br#"[["SET","a",1],["GET","a"]]"#).unwrap();
        assert_eq!(cmds.len(), 2);
        assert_eq!(strings(&cmds[1]), ["GET", "a"]);
        assert_eq!(parse_pipeline_json(b"[]"), Err(RequestError::EmptyPipeline));
        assert_eq!(
            parse_pipeline_json(br#"["GET","a"]"#),
            Err(RequestError::NotAnArrayOfCommands)
        );
        assert_eq!(
            parse_pipeline_json(br#"{"x":1}"#),
            Err(RequestError::NotAnArrayOfCommands)
        );
        assert_eq!(
            parse_pipeline_json(br#"[["GET","a"],[]]"#),
            Err(RequestError::EmptyCommand)
        );
    }

    /// One pass over the body, with the answers a parse-then-check would give: a
    /// syntax error anywhere wins, otherwise the first problem in document order.
    #[test]
    fn errors_keep_their_precedence() {
        for (body, expected) in [
            (&br#"[["SET","k",null],[1,"#[..], "malformed"),
            (br#"["SET",null] x"#, "malformed"),
            (br#"["GET","a"]]"#, "malformed"),
            (br#"["SET","k",null,{"a":1}]"#, "argument 3 is null"),
            (br#"[1,null]"#, "command name"),
        ] {
            let error = parse_command_json(body).unwrap_err().to_string();
            let ok = match expected {
                "malformed" => error.starts_with("ERR failed to parse"),
                text => error.contains(text),
            };
            assert!(ok, "{}: {error}", String::from_utf8_lossy(body));
        }
        for body in [
            &b"5"[..],
            b"\"text\"",
            b"null",
            b"true",
            b"-1.5",
            br#"{"a":[1]}"#,
        ] {
            assert_eq!(parse_command_json(body), Err(RequestError::NotAnArray));
            assert_eq!(
                parse_pipeline_json(body),
                Err(RequestError::NotAnArrayOfCommands)
            );
        }
        assert_eq!(
            parse_pipeline_json(br#"[["GET","a"],5,["SET",null]]"#),
            Err(RequestError::NotAnArrayOfCommands)
        );
        // A body of the wrong shape wins over an earlier item's bad argument…
        assert_eq!(
            parse_pipeline_json(br#"[["SET","k",[]],{"x":1}]"#),
            Err(RequestError::NotAnArrayOfCommands)
        );
        // …which is otherwise the first item error, or, item by item, that item's.
        assert_eq!(
            parse_pipeline_json(br#"[["GET","a"],["SET","k",[]],["SET",null]]"#),
            Err(RequestError::BadArgument {
                position: 3,
                kind: "an array"
            })
        );
        let items = parse_pipeline_items_json(&br#"[["GET","a"],["SET","k",[]],["SET",null]]"#[..])
            .expect("an array of arrays");
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok());
        assert_eq!(
            items[1],
            Err(RequestError::BadArgument {
                position: 3,
                kind: "an array"
            })
        );
        assert!(items[2].is_err());
        assert!(matches!(
            parse_pipeline_json(br#"[["SET","k",[]],{"x":1]"#),
            Err(RequestError::MalformedJson(_))
        ));
        let cmds = parse_pipeline_json(br#" [ ["GET", "a\nb"] , ["INCRBY","n",-2] ] "#).unwrap();
        assert_eq!(strings(&cmds[0]), ["GET", "a\nb"]);
        assert_eq!(strings(&cmds[1]), ["INCRBY", "n", "-2"]);
    }

    #[test]
    fn path_segments_are_decoded_one_by_one() {
        let cmd = parse_path_command("/set/a%2Fb/x+y%20z", None, None).unwrap();
        assert_eq!(strings(&cmd), ["set", "a/b", "x+y z"]);
    }

    #[test]
    fn path_body_then_query() {
        let cmd = parse_path_command(
            "/set/foo",
            Some(Bytes::from_static(b"V a")),
            Some("EX=100&_token=secret&NX"),
        )
        .unwrap();
        assert_eq!(strings(&cmd), ["set", "foo", "V a", "EX", "100", "NX"]);
    }

    #[test]
    fn path_empty_body_adds_nothing_and_trailing_slash_is_ignored() {
        let cmd = parse_path_command("/get/foo/", Some(Bytes::new()), None).unwrap();
        assert_eq!(strings(&cmd), ["get", "foo"]);
        let cmd = parse_path_command("/set/foo//", None, None).unwrap();
        assert_eq!(strings(&cmd), ["set", "foo", ""]);
    }

    #[test]
    fn path_query_plus_is_a_space() {
        let cmd = parse_path_command("/echo", None, Some("a+b=c%2Bd")).unwrap();
        assert_eq!(strings(&cmd), ["echo", "a b", "c+d"]);
    }

    #[test]
    fn path_bad_names() {
        assert_eq!(
            parse_path_command("/", None, None),
            Err(RequestError::EmptyCommand)
        );
        assert_eq!(
            parse_path_command("/get%20x/k", None, None),
            Err(RequestError::BadCommandName)
        );
    }
}
