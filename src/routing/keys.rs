//! Key positions from `COMMAND`'s key specifications (Redis 7).
//!
//! ```text
//! begin_search: index <i> | keyword <word> startfrom <s> | unknown
//! find_keys:    range lastkey <l> keystep <k> limit <n> | keynum keynumidx <i> firstkey <f> keystep <k> | unknown
//! ```
//! This follows Redis' own `getKeysUsingKeySpecs`. Specs that are `unknown` or
//! flagged `incomplete` cannot be resolved from the arguments alone: such
//! commands ask the server (`COMMAND GETKEYS`).

use bytes::Bytes;

use crate::protocol::reply::Frame;

/// Where the search for keys starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BeginSearch {
    /// A fixed argument index.
    Index(usize),
    /// After a keyword, searched from `start_from` (negative: from the end, backwards).
    Keyword {
        /// The keyword, upper case.
        keyword: Vec<u8>,
        /// Where the search starts.
        start_from: i64,
    },
    /// Not expressible: ask the server.
    Unknown,
}

/// How keys are found from the start position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FindKeys {
    /// A range of arguments.
    Range {
        /// Last key relative to the first (negative: from the end).
        last_key: i64,
        /// Distance between keys.
        key_step: usize,
        /// With `last_key == -1`: the keys are 1/limit of the remaining arguments.
        limit: usize,
    },
    /// A count argument followed by that many keys.
    KeyNum {
        /// Index of the count, relative to the start.
        key_num_index: usize,
        /// Index of the first key, relative to the start.
        first_key: usize,
        /// Distance between keys.
        key_step: usize,
    },
    /// Not expressible: ask the server.
    Unknown,
}

/// One key specification of a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    /// Start of the search.
    pub begin: BeginSearch,
    /// How keys are found.
    pub find: FindKeys,
    /// The spec may miss keys (`incomplete` flag).
    pub incomplete: bool,
}

impl KeySpec {
    /// Whether this spec can be evaluated without asking the server.
    pub fn is_resolvable(&self) -> bool {
        !self.incomplete
            && !matches!(self.begin, BeginSearch::Unknown)
            && !matches!(self.find, FindKeys::Unknown)
    }

    /// Parses one spec from the `COMMAND` reply (a flat list of name/value pairs).
    pub fn from_frame(frame: &Frame) -> Option<KeySpec> {
        let fields = pairs(frame)?;
        let mut spec = KeySpec {
            begin: BeginSearch::Unknown,
            find: FindKeys::Unknown,
            incomplete: false,
        };
        for (name, value) in fields {
            match name.as_str() {
                "flags" => {
                    spec.incomplete = list(value)
                        .iter()
                        .any(|f| f.eq_ignore_ascii_case("incomplete"))
                }
                "begin_search" => spec.begin = parse_begin(value).unwrap_or(BeginSearch::Unknown),
                "find_keys" => spec.find = parse_find(value).unwrap_or(FindKeys::Unknown),
                _ => {}
            }
        }
        Some(spec)
    }
}

fn parse_begin(frame: &Frame) -> Option<BeginSearch> {
    let (kind, spec) = typed(frame)?;
    match kind.as_str() {
        "index" => Some(BeginSearch::Index(
            usize::try_from(int(&spec, "index")?).ok()?,
        )),
        "keyword" => Some(BeginSearch::Keyword {
            keyword: text(&spec, "keyword")?.to_ascii_uppercase().into_bytes(),
            start_from: int(&spec, "startfrom")?,
        }),
        _ => None,
    }
}

fn parse_find(frame: &Frame) -> Option<FindKeys> {
    let (kind, spec) = typed(frame)?;
    match kind.as_str() {
        "range" => Some(FindKeys::Range {
            last_key: int(&spec, "lastkey")?,
            key_step: usize::try_from(int(&spec, "keystep")?).ok()?.max(1),
            limit: usize::try_from(int(&spec, "limit")?).ok()?,
        }),
        "keynum" => Some(FindKeys::KeyNum {
            key_num_index: usize::try_from(int(&spec, "keynumidx")?).ok()?,
            first_key: usize::try_from(int(&spec, "firstkey")?).ok()?,
            key_step: usize::try_from(int(&spec, "keystep")?).ok()?.max(1),
        }),
        _ => None,
    }
}

/// The argument indexes (0 is the command name) that are keys, or `None` when
/// the specs cannot tell (unknown or incomplete: ask the server).
pub fn key_positions(specs: &[KeySpec], args: &[Bytes]) -> Option<Vec<usize>> {
    let argc = args.len();
    let name = args.first().map(|n| &n[..]).unwrap_or_default();
    if name.eq_ignore_ascii_case(b"xread") || name.eq_ignore_ascii_case(b"xreadgroup") {
        // Their specs take the first `STREAMS` after a fixed index, which may be a
        // group or consumer named "streams": the keys are found as Redis finds them.
        // Without `STREAMS` there are no keys: Redis answers its own syntax error.
        let Some(keyword) = streams_keyword(args) else {
            return Some(Vec::new());
        };
        let streams = (argc - keyword - 1) / 2;
        return Some((keyword + 1..keyword + 1 + streams).collect());
    }
    let mut positions = Vec::new();
    for spec in specs {
        if !spec.is_resolvable() {
            return None;
        }
        if let Some((keyword, start_from)) = keyword_before_one_key(spec) {
            // Redis' key-spec search stops at the first keyword, but a command
            // that takes one key after a keyword (GEORADIUS's `STORE` and
            // `STOREDIST`) writes to the one after the *last* occurrence, while
            // `COMMAND GETKEYS` reports the first. So every occurrence counts:
            // every key the command may touch gets checked and routed.
            for at in (start_from..argc).filter(|&i| args[i].eq_ignore_ascii_case(keyword)) {
                push_keys(spec, args, at + 1, &mut positions)?;
            }
        } else if let Some(first) = begin_index(&spec.begin, args) {
            push_keys(spec, args, first, &mut positions)?;
        }
    }
    Some(positions)
}

/// Where XREAD/XREADGROUP's `STREAMS` keyword is, its options walked as Redis walks
/// them (a group or consumer named "streams" is a name): the first key follows it.
pub fn streams_keyword(args: &[Bytes]) -> Option<usize> {
    walk_stream_options(args, |_| {})
}

/// Walks XREAD/XREADGROUP's options up to `STREAMS`, handing `on_block` the index of
/// each `BLOCK` value; returns the index of `STREAMS`.
pub fn walk_stream_options(args: &[Bytes], mut on_block: impl FnMut(usize)) -> Option<usize> {
    let mut i = 1;
    while i < args.len() {
        let word = &args[i];
        let operands = if word.eq_ignore_ascii_case(b"streams") {
            return Some(i);
        } else if word.eq_ignore_ascii_case(b"group") {
            2
        } else if word.eq_ignore_ascii_case(b"count") {
            1
        } else if word.eq_ignore_ascii_case(b"block") {
            if i + 1 < args.len() {
                on_block(i + 1);
            }
            1
        } else {
            0
        };
        i += 1 + operands;
    }
    None
}

/// The keyword and start of a spec that finds one key after a keyword searched
/// forwards; `None` for any other spec.
fn keyword_before_one_key(spec: &KeySpec) -> Option<(&[u8], usize)> {
    match (&spec.begin, &spec.find) {
        (
            BeginSearch::Keyword {
                keyword,
                start_from,
            },
            FindKeys::Range { last_key: 0, .. },
        ) => Some((keyword, usize::try_from(*start_from).ok()?)),
        _ => None,
    }
}

/// Appends the positions of the keys that `spec` finds from `first`; `None`
/// when the arguments cannot tell (a key count that is not a number).
fn push_keys(
    spec: &KeySpec,
    args: &[Bytes],
    first: usize,
    positions: &mut Vec<usize>,
) -> Option<()> {
    let argc = args.len();
    if first >= argc {
        return Some(());
    }
    let (first, last, step) = match &spec.find {
        FindKeys::Range {
            last_key,
            key_step,
            limit,
        } => {
            let last = if *last_key >= 0 {
                first as i64 + last_key
            } else if *limit == 0 {
                argc as i64 + last_key
            } else {
                first as i64 + ((argc - first) / limit) as i64 + last_key
            };
            (first, last, *key_step)
        }
        FindKeys::KeyNum {
            key_num_index,
            first_key,
            key_step,
        } => {
            let count_arg = args.get(first + key_num_index)?;
            let count: i64 = std::str::from_utf8(count_arg).ok()?.parse().ok()?;
            let first_key = first + first_key;
            // A negative or huge count is no key list (Redis refuses the command):
            // checked, so that `EVAL s -9223372036854775808` cannot overflow.
            let span = count
                .checked_sub(1)
                .and_then(|n| n.checked_mul(*key_step as i64))
                .and_then(|n| n.checked_add(first_key as i64))
                .filter(|_| count >= 0)?;
            (first_key, span, *key_step)
        }
        FindKeys::Unknown => return None,
    };
    let mut i = first;
    while (i as i64) <= last && i < argc {
        positions.push(i);
        i += step;
    }
    Some(())
}

fn begin_index(begin: &BeginSearch, args: &[Bytes]) -> Option<usize> {
    match begin {
        BeginSearch::Index(i) => Some(*i),
        BeginSearch::Keyword {
            keyword,
            start_from,
        } => {
            let argc = args.len() as i64;
            let matches = |i: i64| args[i as usize].eq_ignore_ascii_case(keyword);
            if *start_from >= 0 {
                (*start_from..argc)
                    .find(|i| matches(*i))
                    .map(|i| i as usize + 1)
            } else {
                let start = argc + start_from;
                (1..=start.max(0))
                    .rev()
                    .find(|i| matches(*i))
                    .map(|i| i as usize + 1)
            }
        }
        BeginSearch::Unknown => None,
    }
}

fn pairs(frame: &Frame) -> Option<Vec<(String, &Frame)>> {
    let Frame::Array { data, .. } = frame else {
        return None;
    };
    Some(
        data.chunks(2)
            .filter_map(|pair| match pair {
                [name, value] => Some((as_string(name)?, value)),
                _ => None,
            })
            .collect(),
    )
}

fn typed(frame: &Frame) -> Option<(String, Vec<(String, &Frame)>)> {
    let fields = pairs(frame)?;
    let kind = fields
        .iter()
        .find(|(n, _)| n == "type")
        .and_then(|(_, v)| as_string(v))?;
    let spec = fields
        .into_iter()
        .find(|(n, _)| n == "spec")
        .map(|(_, v)| v)?;
    Some((kind, pairs(spec)?))
}

fn int(fields: &[(String, &Frame)], name: &str) -> Option<i64> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| match v {
            Frame::Number { data, .. } => Some(*data),
            _ => None,
        })
}

fn text(fields: &[(String, &Frame)], name: &str) -> Option<String> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| as_string(v))
}

fn list(frame: &Frame) -> Vec<String> {
    match frame {
        Frame::Array { data, .. } => data.iter().filter_map(as_string).collect(),
        _ => Vec::new(),
    }
}

fn as_string(frame: &Frame) -> Option<String> {
    match frame {
        Frame::SimpleString { data, .. } | Frame::BlobString { data, .. } => {
            Some(String::from_utf8_lossy(data).into_owned())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(parts: &[&str]) -> Vec<Bytes> {
        parts.iter().map(|s| Bytes::from(s.to_string())).collect()
    }

    fn range(index: usize, last_key: i64, key_step: usize, limit: usize) -> KeySpec {
        KeySpec {
            begin: BeginSearch::Index(index),
            find: FindKeys::Range {
                last_key,
                key_step,
                limit,
            },
            incomplete: false,
        }
    }

    #[test]
    fn single_key_and_ranges() {
        assert_eq!(
            key_positions(&[range(1, 0, 1, 0)], &args(&["GET", "k"])),
            Some(vec![1])
        );
        // MSET k1 v1 k2 v2
        assert_eq!(
            key_positions(&[range(1, -1, 2, 0)], &args(&["MSET", "a", "1", "b", "2"])),
            Some(vec![1, 3])
        );
        // DEL a b c
        assert_eq!(
            key_positions(&[range(1, -1, 1, 0)], &args(&["DEL", "a", "b", "c"])),
            Some(vec![1, 2, 3])
        );
        // XREAD STREAMS a b 0 0: keyword STREAMS, range lastkey -1 limit 2
        let xread = KeySpec {
            begin: BeginSearch::Keyword {
                keyword: b"STREAMS".to_vec(),
                start_from: 1,
            },
            find: FindKeys::Range {
                last_key: -1,
                key_step: 1,
                limit: 2,
            },
            incomplete: false,
        };
        assert_eq!(
            key_positions(
                &[xread],
                &args(&["XREAD", "COUNT", "2", "streams", "a", "b", "0", "0"])
            ),
            Some(vec![4, 5])
        );
    }

    #[test]
    fn a_keyword_before_one_key_counts_at_every_occurrence() {
        // GEORADIUS k lon lat r unit STORE a STORE b: Redis writes to b, its
        // key specs (and COMMAND GETKEYS) name a.
        let store = KeySpec {
            begin: BeginSearch::Keyword {
                keyword: b"STORE".to_vec(),
                start_from: 6,
            },
            find: FindKeys::Range {
                last_key: 0,
                key_step: 1,
                limit: 0,
            },
            incomplete: false,
        };
        let georadius = [range(1, 0, 1, 0), store];
        let command = |tail: &[&str]| {
            let mut parts = vec!["GEORADIUS", "k", "13", "52", "500", "km"];
            parts.extend_from_slice(tail);
            key_positions(&georadius, &args(&parts))
        };
        assert_eq!(command(&["STORE", "a"]), Some(vec![1, 7]));
        assert_eq!(command(&["store", "a", "STORE", "b"]), Some(vec![1, 7, 9]));
        // A trailing keyword with no key after it names nothing.
        assert_eq!(command(&["STORE", "a", "STORE"]), Some(vec![1, 7]));
        assert_eq!(command(&["COUNT", "1"]), Some(vec![1]));
    }

    #[test]
    fn key_numbers() {
        // EVAL script 2 k1 k2 a1
        let eval = KeySpec {
            begin: BeginSearch::Index(2),
            find: FindKeys::KeyNum {
                key_num_index: 0,
                first_key: 1,
                key_step: 1,
            },
            incomplete: false,
        };
        assert_eq!(
            key_positions(
                std::slice::from_ref(&eval),
                &args(&["EVAL", "s", "2", "k1", "k2", "a1"])
            ),
            Some(vec![3, 4])
        );
        assert_eq!(
            key_positions(
                std::slice::from_ref(&eval),
                &args(&["EVAL", "s", "0", "a1"])
            ),
            Some(vec![])
        );
        // Negative or huge counts are no key list (and overflow nothing).
        for count in ["-1", "-9223372036854775808", "9223372036854775807"] {
            assert_eq!(
                key_positions(
                    std::slice::from_ref(&eval),
                    &args(&["EVAL", "s", count, "k"])
                ),
                None,
                "{count}"
            );
        }
        assert_eq!(key_positions(&[eval], &args(&["EVAL", "s", "x"])), None);
    }

    #[test]
    fn unknown_specs_ask_the_server() {
        let unknown = KeySpec {
            begin: BeginSearch::Unknown,
            find: FindKeys::Unknown,
            incomplete: false,
        };
        assert_eq!(
            key_positions(&[range(1, 0, 1, 0), unknown], &args(&["SORT", "k"])),
            None
        );
    }
}
