//! Request parsing never panics, whatever the bytes: JSON command and pipeline bodies,
//! raw paths with query strings and bodies, and the metrics body scanner.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use restash::metrics::{path_command_name, BodyShape, NameScanner};
use restash::protocol::request::{parse_command_json, parse_path_command, parse_pipeline_json};

fuzz_target!(|data: &[u8]| {
    // The first byte picks how the rest is split, so one input exercises every parser.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let _ = parse_command_json(bytes::Bytes::copy_from_slice(rest));
    let _ = parse_pipeline_json(bytes::Bytes::copy_from_slice(rest));

    for shape in [BodyShape::Command, BodyShape::Pipeline] {
        let mut scanner = NameScanner::new(shape);
        for chunk in rest.chunks(usize::from(selector % 7) + 1) {
            scanner.feed(chunk);
        }
        let _ = scanner.finish();
    }

    // A raw path, an optional query string and an optional body, split at NUL bytes.
    let mut parts = rest.splitn(3, |b| *b == 0);
    let path = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let query = parts.next().map(String::from_utf8_lossy);
    let body = parts.next().map(Bytes::copy_from_slice);
    let path = format!("/{}", path.trim_start_matches('/'));
    let _ = path_command_name(&path);
    let body = if selector & 1 == 1 { body } else { None };
    let _ = parse_path_command(&path, body, query.as_deref());
});
