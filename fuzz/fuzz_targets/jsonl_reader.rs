//! The reader stage over arbitrary bytes: line splitting with a line limit,
//! BOM and CR handling, UTF-8 checks, text-field extraction, and `.json`
//! files holding one array of records.
//!
//! Input: one byte of options, then the file's bytes. Each record is checked
//! against an independent reading of the same bytes: lines split on `\n`,
//! the limit applied, JSON parsed whole into a `serde_json::Value` (without
//! a depth limit: the reader skips other fields without one). A line that
//! is valid JSON gives exactly the string serde_json finds at the field, or
//! the matching skip reason. A line serde_json rejects is skipped as
//! malformed, with two exceptions the reader allows on purpose: a lone
//! surrogate escape (repaired to U+FFFD and counted) and a number too large
//! for an f64 in a field the reader skips. A `.json` file whose first byte
//! after a BOM and whitespace is `[` gives one record per element of the
//! array as serde_json reads it (a comma before the closing `]` allowed);
//! an array serde_json rejects gives at least one skipped record.

#![no_main]

use std::io::BufReader;
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use serde_json::value::RawValue;
use serde_json::Value;
use tokenmill::input::{FileReader, Format, ReaderOptions, SkipReason, TxtMode};

/// What the reader must make of one line (or of the whole file).
#[derive(Debug)]
enum Expected {
    Text(String),
    Skip(SkipReason),
    /// serde_json rejects the line; the reader may still keep it after
    /// repairing lone surrogate escapes.
    Rejected,
    /// serde_json rejects a number in the line: the reader may keep it
    /// when that number sits in a field it skips.
    HugeNumber,
}

struct Options {
    format: Format,
    /// Named `.json`: may hold one array of records.
    array: bool,
    txt_mode: TxtMode,
    whole_json_line: bool,
    field: &'static str,
    max_line_bytes: usize,
    /// Capacity of the `BufReader`: small ones split lines over many reads.
    buffer: usize,
}

impl Options {
    fn from_byte(b: u8) -> Options {
        let (format, txt_mode, whole_json_line) = match b & 3 {
            0 | 1 => (Format::Jsonl, TxtMode::Line, false),
            2 => (Format::Jsonl, TxtMode::Line, true),
            _ if b & 4 == 0 => (Format::Text, TxtMode::Line, false),
            _ => (Format::Text, TxtMode::File, false),
        };
        Options {
            format,
            array: b & 3 == 1,
            txt_mode,
            whole_json_line,
            field: if b & 8 == 0 { "text" } else { "meta.body" },
            // Small limits so that the too-long path is taken often.
            max_line_bytes: [16, 64, 300, 4096][usize::from(b >> 4 & 3)],
            buffer: [1, 7, 64, 8192][usize::from(b >> 6)],
        }
    }
}

/// The value at a dotted path, as serde_json sees the whole line.
fn expected_json(line: &str, field: &str) -> Expected {
    if line.trim().is_empty() {
        return Expected::Skip(SkipReason::Empty);
    }
    let mut de = serde_json::Deserializer::from_str(line);
    de.disable_recursion_limit();
    let parsed = serde::Deserialize::deserialize(&mut de).and_then(|v: Value| de.end().map(|_| v));
    let mut value = match parsed {
        Ok(v) => v,
        Err(e) if e.to_string().starts_with("number out of range") => return Expected::HugeNumber,
        Err(_) => return Expected::Rejected,
    };
    for key in field.split('.') {
        value = match value {
            Value::Object(mut map) => match map.remove(key) {
                Some(v) => v,
                None => return Expected::Skip(SkipReason::MissingField),
            },
            _ => return Expected::Skip(SkipReason::MissingField),
        };
    }
    match value {
        Value::String(s) => text(s),
        _ => Expected::Skip(SkipReason::NotAString),
    }
}

fn text(s: String) -> Expected {
    if s.trim().is_empty() {
        Expected::Skip(SkipReason::Empty)
    } else {
        Expected::Text(s)
    }
}

/// Whether a `.json` file holds an array: `[` first after a BOM and whitespace.
fn starts_array(data: &[u8]) -> bool {
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    body.iter().find(|b| !b" \t\r\n".contains(b)) == Some(&b'[')
}

/// Bytes of a JSON value without the whitespace between its tokens.
fn compact_len(raw: &str) -> usize {
    let (mut n, mut in_string, mut escaped) = (0, false, false);
    for &b in raw.as_bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if b == b'"' {
            in_string = true;
        } else if b" \t\r\n".contains(&b) {
            continue;
        }
        n += 1;
    }
    n
}

/// The records of an array file, or `None` when serde_json rejects it. A
/// comma before the closing `]` is allowed, as the reader allows it.
fn expected_array(data: &[u8], o: &Options) -> Option<Vec<Expected>> {
    let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let text = std::str::from_utf8(body).ok()?;
    array_records(text, o).or_else(|| array_records(&without_trailing_comma(text)?, o))
}

fn array_records(text: &str, o: &Options) -> Option<Vec<Expected>> {
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let elements: Vec<&RawValue> = serde::Deserialize::deserialize(&mut de).ok()?;
    de.end().ok()?;
    let element = |raw: &RawValue| {
        if compact_len(raw.get()) > o.max_line_bytes {
            Expected::Skip(SkipReason::LineTooLong)
        } else {
            expected_json(raw.get(), o.field)
        }
    };
    Some(elements.into_iter().map(element).collect())
}

/// `[a, b,]` as `[a, b]`.
fn without_trailing_comma(text: &str) -> Option<String> {
    let json_ws = |c: char| " \t\r\n".contains(c);
    let inner = text.trim_end_matches(json_ws).strip_suffix(']')?;
    let inner = inner.trim_end_matches(json_ws).strip_suffix(',')?;
    let before = inner.trim_end_matches(json_ws);
    (!before.ends_with('[')).then(|| format!("{before}]"))
}

/// The records the bytes must give, in order; `None` for an array file
/// that serde_json rejects.
fn expected(data: &[u8], o: &Options) -> Option<Vec<Expected>> {
    if o.format == Format::Text && o.txt_mode == TxtMode::File {
        if data.len() > o.max_line_bytes {
            return Some(vec![Expected::Skip(SkipReason::LineTooLong)]);
        }
        let body = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
        return Some(vec![match std::str::from_utf8(body) {
            Ok(t) => text(t.to_owned()),
            Err(_) => Expected::Skip(SkipReason::InvalidUtf8),
        }]);
    }
    if o.array && starts_array(data) {
        return expected_array(data, o);
    }
    let mut lines: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    if data.is_empty() || data.ends_with(b"\n") {
        lines.pop(); // nothing after the last `\n` is no line
    }
    let mut out = Vec::new();
    for (i, raw) in lines.into_iter().enumerate() {
        if raw.len() > o.max_line_bytes {
            out.push(Expected::Skip(SkipReason::LineTooLong));
            continue;
        }
        let mut line = raw;
        if i == 0 {
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        line = line.strip_suffix(b"\r").unwrap_or(line);
        let Ok(line) = std::str::from_utf8(line) else {
            out.push(Expected::Skip(SkipReason::InvalidUtf8));
            continue;
        };
        // The target makes only line files (`Format::Text` or `Format::Jsonl`).
        out.push(if o.format == Format::Text || o.whole_json_line {
            text(line.to_owned())
        } else {
            expected_json(line, o.field)
        });
    }
    Some(out)
}

/// Whether `line` holds a `\u` escape of a UTF-16 surrogate.
fn has_surrogate_escape(line: &[u8]) -> bool {
    line.windows(4).any(|w| {
        w[0] == b'\\' && w[1] == b'u' && w[2].eq_ignore_ascii_case(&b'd') && {
            matches!(w[3].to_ascii_lowercase(), b'8'..=b'9' | b'a'..=b'f')
        }
    })
}

fuzz_target!(|input: &[u8]| {
    let Some((&first, data)) = input.split_first() else {
        return;
    };
    let o = Options::from_byte(first);
    let mut opts =
        ReaderOptions::new(o.field, o.txt_mode, o.max_line_bytes).expect("valid options");
    opts.whole_json_line = o.whole_json_line;
    let src = Box::new(BufReader::with_capacity(
        o.buffer,
        std::io::Cursor::new(data.to_vec()),
    ));
    let name = if o.array { "fuzz.json" } else { "fuzz.jsonl" };
    let mut reader = FileReader::from_stream(src, Path::new(name), o.format, &opts);
    // Each record with the raw line it came from and whether it was repaired.
    let mut records = Vec::new();
    let mut repaired = 0;
    while let Some(record) = reader.next_record().expect("reading memory cannot fail") {
        let repair = reader.repaired_surrogates - repaired;
        repaired = reader.repaired_surrogates;
        let n = records.len() + 1;
        assert!(repair <= 1, "line {n}: one line, one repair");
        let surrogate = has_surrogate_escape(reader.raw_line());
        assert!(repair == 0 || surrogate, "line {n}: repaired what?");
        if o.txt_mode == TxtMode::Line {
            assert_eq!(record.line, n as u64, "records are numbered from 1");
        }
        if let Err((reason, detail)) = &record.text {
            assert!(
                SkipReason::ALL.contains(reason),
                "{reason:?} is not counted"
            );
            assert!(!detail.is_empty(), "a skip says why");
        }
        records.push((record.text, surrogate));
    }
    let Some(want) = expected(data, &o) else {
        assert!(
            records.iter().any(|(text, _)| text.is_err()) || has_surrogate_escape(data),
            "an array serde_json rejects, read without a skip: {records:?}"
        );
        return;
    };
    for (n, ((text, surrogate), expected)) in records.iter().zip(&want).enumerate() {
        let n = n + 1;
        match (text, expected) {
            (Ok(t), Expected::Text(e)) => assert_eq!(t, e, "line {n}"),
            (Err((reason, _)), Expected::Skip(e)) => assert_eq!(reason, e, "line {n}"),
            (Err((SkipReason::MalformedJson, _)), Expected::Rejected | Expected::HugeNumber) => {}
            (_, Expected::HugeNumber) => {}
            // Kept or skipped for its content after a surrogate repair.
            (_, Expected::Rejected) => assert!(
                surrogate,
                "line {n}: {text:?} for a line serde_json rejects, without a surrogate escape"
            ),
            (got, want) => panic!("line {n}: got {got:?}, want {want:?}"),
        }
    }
    assert_eq!(records.len(), want.len(), "records: {records:?}");
});
