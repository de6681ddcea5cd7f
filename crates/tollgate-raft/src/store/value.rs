//! How state-machine values are stored: JSON documents in a compact binary
//! form, everything else as it is.
//!
//! Roles write and read JSON (serde_json's compact output); storing it as
//! such spends most of its bytes on field names, quotes and defaults
//! (`"usage_cap_overrides":{}`): an entitlement is about 530 bytes. Stored,
//! a JSON value becomes [`BINARY`] followed by one item:
//!
//! ```text
//! item   = 0x00 null | 0x01 false | 0x02 true
//!        | 0x03 varint                 an integer >= 0, as serde_json writes it
//!        | 0x04 varint                 an integer < 0: -(n + 1)
//!        | 0x05 varint bytes           any other number, its text as written
//!        | 0x06 varint bytes           a string (UTF-8, unescaped)
//!        | 0x07 varint item*           an array of n items
//!        | 0x08 varint (name item)*    an object of n members, in order
//! name   = varint 0, varint bytes      a name spelled out
//!        | varint n (n >= 1)           the role's field name n - 1
//! varint = LEB128, at most 10 bytes
//! ```
//!
//! The field names come from the role ([`StateMachineLogic::FIELD_NAMES`]);
//! the list only ever grows at its end, so a stored name number keeps its
//! meaning. A value is stored in this form only when decoding it gives back
//! exactly the bytes the role wrote; anything else (not JSON, JSON with
//! whitespace or escapes serde_json would not write, an empty index value)
//! is stored unchanged, except that raw bytes starting with [`BINARY`] or
//! [`ESCAPED`] get an [`ESCAPED`] in front. A JSON document never starts
//! with either, so a reader tells the forms apart by the first byte, and
//! values stored before this form existed read unchanged (and are
//! rewritten at open, see `SledStateMachine::open`).
//!
//! [`StateMachineLogic::FIELD_NAMES`]: crate::logic::StateMachineLogic::FIELD_NAMES

use std::borrow::Cow;
use std::collections::HashMap;

/// The first byte of a value stored in the binary form.
pub const BINARY: u8 = 0x02;
/// The first byte of a value stored as it is although it starts with
/// [`BINARY`] or [`ESCAPED`] itself (a role's raw bytes): the rest is it.
pub const ESCAPED: u8 = 0x03;

/// Deepest nesting stored in the binary form (deeper JSON stays as it is).
const DEPTH_MAX: usize = 64;

/// A role's field names, numbered from 1 in their order.
#[derive(Debug)]
pub struct FieldNames {
    names: &'static [&'static str],
    numbers: HashMap<&'static [u8], u64>,
}

impl FieldNames {
    /// The numbering of `names` (a later duplicate keeps the first number).
    pub fn new(names: &'static [&'static str]) -> Self {
        let mut numbers = HashMap::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            numbers.entry(name.as_bytes()).or_insert(i as u64 + 1);
        }
        FieldNames { names, numbers }
    }
}

/// How `json` is stored: the binary form when it gives back exactly these
/// bytes, otherwise the bytes themselves.
pub fn encode<'a>(json: &'a [u8], names: &FieldNames) -> Cow<'a, [u8]> {
    if let Some(&(BINARY | ESCAPED)) = json.first() {
        let mut out = Vec::with_capacity(json.len() + 1);
        out.push(ESCAPED);
        out.extend_from_slice(json);
        return Cow::Owned(out);
    }
    if !json.first().is_some_and(|b| matches!(b, b'{' | b'[')) {
        // Scalars and non-JSON values (index markers, raw bytes) gain
        // nothing worth a parse.
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len() / 2);
    out.push(BINARY);
    let mut parser = Parser { json, at: 0 };
    if parser.item(&mut out, names, 0).is_none() || parser.at != json.len() {
        return Cow::Borrowed(json);
    }
    match decode(&out, names) {
        Ok(back) if back.as_ref() == json => Cow::Owned(out),
        _ => Cow::Borrowed(json),
    }
}

/// A value found stored, in the stored form: one already in it (it starts
/// with [`BINARY`] or [`ESCAPED`]) as it is, one stored before the form
/// existed (JSON, or a role's raw bytes) encoded. For rewriting an older
/// state and for installing a snapshot an older node built. (A role's raw
/// bytes stored before the form existed and starting with either byte
/// would be taken for the form; no role of ours wrote such values: theirs
/// are JSON or empty.)
pub fn migrate<'a>(found: &'a [u8], names: &FieldNames) -> Cow<'a, [u8]> {
    match found.first() {
        Some(&(BINARY | ESCAPED)) => Cow::Borrowed(found),
        _ => encode(found, names),
    }
}

/// The bytes the role wrote, from a stored value of either form.
pub fn decode<'a>(stored: &'a [u8], names: &FieldNames) -> Result<Cow<'a, [u8]>, String> {
    let mut rest = match stored.split_first() {
        Some((&BINARY, rest)) => rest,
        Some((&ESCAPED, rest)) => return Ok(Cow::Borrowed(rest)),
        _ => return Ok(Cow::Borrowed(stored)),
    };
    let mut out = Vec::with_capacity(stored.len() * 3);
    write_item(&mut rest, &mut out, names, 0)?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the stored value", rest.len()));
    }
    Ok(Cow::Owned(out))
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn put_bytes(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
    out.push(tag);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A strict reader of compact JSON (no whitespace), writing the binary form
/// as it goes; `None` for anything it does not take.
struct Parser<'a> {
    json: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.json.get(self.at).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.at += 1)
    }

    fn literal(&mut self, text: &[u8]) -> Option<()> {
        self.json[self.at..]
            .starts_with(text)
            .then(|| self.at += text.len())
    }

    fn item(&mut self, out: &mut Vec<u8>, names: &FieldNames, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| out.push(0x00)),
            b'f' => self.literal(b"false").map(|()| out.push(0x01)),
            b't' => self.literal(b"true").map(|()| out.push(0x02)),
            b'"' => {
                let s = self.string()?;
                put_bytes(out, 0x06, &s);
                Some(())
            }
            b'[' => {
                self.at += 1;
                let mut items = Vec::new();
                let mut n = 0u64;
                if self.eat(b']').is_none() {
                    loop {
                        self.item(&mut items, names, depth + 1)?;
                        n += 1;
                        if self.eat(b',').is_none() {
                            self.eat(b']')?;
                            break;
                        }
                    }
                }
                out.push(0x07);
                put_varint(out, n);
                out.extend_from_slice(&items);
                Some(())
            }
            b'{' => {
                self.at += 1;
                let mut members = Vec::new();
                let mut n = 0u64;
                if self.eat(b'}').is_none() {
                    loop {
                        if self.peek()? != b'"' {
                            return None;
                        }
                        let name = self.string()?;
                        match names.numbers.get(name.as_ref()) {
                            Some(&number) => put_varint(&mut members, number),
                            None => {
                                put_varint(&mut members, 0);
                                put_varint(&mut members, name.len() as u64);
                                members.extend_from_slice(&name);
                            }
                        }
                        self.eat(b':')?;
                        self.item(&mut members, names, depth + 1)?;
                        n += 1;
                        if self.eat(b',').is_none() {
                            self.eat(b'}')?;
                            break;
                        }
                    }
                }
                out.push(0x08);
                put_varint(out, n);
                out.extend_from_slice(&members);
                Some(())
            }
            b'-' | b'0'..=b'9' => {
                let start = self.at;
                while self
                    .peek()
                    .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
                {
                    self.at += 1;
                }
                let text = &self.json[start..self.at];
                let (negative, digits) = match text.split_first() {
                    Some((b'-', digits)) => (true, digits),
                    _ => (false, text),
                };
                let canonical = !digits.is_empty()
                    && digits.iter().all(u8::is_ascii_digit)
                    && (digits.len() == 1 || digits[0] != b'0');
                let value = canonical
                    .then(|| std::str::from_utf8(digits).ok()?.parse::<u64>().ok())
                    .flatten();
                match (value, negative) {
                    (Some(v), false) => {
                        out.push(0x03);
                        put_varint(out, v);
                    }
                    (Some(v), true) if v > 0 => {
                        out.push(0x04);
                        put_varint(out, v - 1);
                    }
                    _ => put_bytes(out, 0x05, text),
                }
                Some(())
            }
            _ => None,
        }
    }

    /// A string's content, unescaped; at the opening quote.
    fn string(&mut self) -> Option<Cow<'_, [u8]>> {
        self.eat(b'"')?;
        let start = self.at;
        // The common case: no escapes, borrowed.
        loop {
            match self.peek()? {
                b'"' => {
                    let s = &self.json[start..self.at];
                    self.at += 1;
                    std::str::from_utf8(s).ok()?;
                    return Some(Cow::Borrowed(s));
                }
                b'\\' => break,
                b if b < 0x20 => return None,
                _ => self.at += 1,
            }
        }
        let mut s = self.json[start..self.at].to_vec();
        loop {
            match self.peek()? {
                b'"' => {
                    self.at += 1;
                    std::str::from_utf8(&s).ok()?;
                    return Some(Cow::Owned(s));
                }
                b'\\' => {
                    self.at += 1;
                    let escaped = self.peek()?;
                    self.at += 1;
                    match escaped {
                        b'"' | b'\\' | b'/' => s.push(escaped),
                        b'b' => s.push(0x08),
                        b'f' => s.push(0x0c),
                        b'n' => s.push(b'\n'),
                        b'r' => s.push(b'\r'),
                        b't' => s.push(b'\t'),
                        b'u' => {
                            // Only what serde_json writes this way: control
                            // characters. Anything else stays as JSON.
                            let hex = self.json.get(self.at..self.at + 4)?;
                            self.at += 4;
                            let code = u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16)
                                .ok()
                                .filter(|c| *c < 0x20)?;
                            s.push(code);
                        }
                        _ => return None,
                    }
                }
                b if b < 0x20 => return None,
                b => {
                    s.push(b);
                    self.at += 1;
                }
            }
        }
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Result<&'a [u8], String> {
    if data.len() < n {
        return Err(format!(
            "stored value truncated: {n} bytes wanted, {} left",
            data.len()
        ));
    }
    let (head, tail) = data.split_at(n);
    *data = tail;
    Ok(head)
}

fn varint(data: &mut &[u8]) -> Result<u64, String> {
    let mut n = 0u64;
    for shift in (0..70).step_by(7) {
        let b = take(data, 1)?[0];
        if shift == 63 && b > 1 {
            return Err("a stored number overflows".into());
        }
        n |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(n);
        }
    }
    Err("a stored number is too long".into())
}

/// A count or length, which can never exceed the bytes left (each item is
/// at least one byte).
fn count(data: &mut &[u8]) -> Result<usize, String> {
    let n = varint(data)?;
    if n > data.len() as u64 {
        return Err(format!(
            "a stored count of {n} with {} bytes left",
            data.len()
        ));
    }
    Ok(n as usize)
}

fn write_string(out: &mut Vec<u8>, s: &[u8]) -> Result<(), String> {
    std::str::from_utf8(s).map_err(|e| format!("a stored string is not UTF-8: {e}"))?;
    out.push(b'"');
    for &b in s {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            b if b < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            b => out.push(b),
        }
    }
    out.push(b'"');
    Ok(())
}

fn write_item(
    data: &mut &[u8],
    out: &mut Vec<u8>,
    names: &FieldNames,
    depth: usize,
) -> Result<(), String> {
    if depth > DEPTH_MAX {
        return Err("a stored value nests too deep".into());
    }
    match take(data, 1)?[0] {
        0x00 => out.extend_from_slice(b"null"),
        0x01 => out.extend_from_slice(b"false"),
        0x02 => out.extend_from_slice(b"true"),
        0x03 => out.extend_from_slice(varint(data)?.to_string().as_bytes()),
        0x04 => {
            let n = varint(data)?;
            out.push(b'-');
            out.extend_from_slice((u128::from(n) + 1).to_string().as_bytes());
        }
        0x05 => {
            let len = count(data)?;
            let text = take(data, len)?;
            if text.is_empty() || !text.iter().all(|b| b"-+.eE0123456789".contains(b)) {
                return Err("a stored number is not a number".into());
            }
            out.extend_from_slice(text);
        }
        0x06 => {
            let len = count(data)?;
            write_string(out, take(data, len)?)?;
        }
        0x07 => {
            let n = count(data)?;
            out.push(b'[');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                write_item(data, out, names, depth + 1)?;
            }
            out.push(b']');
        }
        0x08 => {
            let n = count(data)?;
            out.push(b'{');
            for i in 0..n {
                if i > 0 {
                    out.push(b',');
                }
                match varint(data)? {
                    0 => {
                        let len = count(data)?;
                        write_string(out, take(data, len)?)?;
                    }
                    number => {
                        let name = usize::try_from(number - 1)
                            .ok()
                            .and_then(|i| names.names.get(i))
                            .ok_or_else(|| format!("stored field name {number} is unknown"))?;
                        write_string(out, name.as_bytes())?;
                    }
                }
                out.push(b':');
                write_item(data, out, names, depth + 1)?;
            }
            out.push(b'}');
        }
        tag => return Err(format!("a stored item of unknown kind {tag:#04x}")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAMES: &[&str] = &["id", "account", "status", "valid_until", "geo_rule"];

    fn names() -> FieldNames {
        FieldNames::new(NAMES)
    }

    fn round_trip(json: &str) -> Vec<u8> {
        let stored = encode(json.as_bytes(), &names()).into_owned();
        assert_eq!(
            decode(&stored, &names()).unwrap().as_ref(),
            json.as_bytes(),
            "{json}"
        );
        stored
    }

    #[test]
    fn serde_json_output_is_stored_binary_and_read_back_exactly() {
        let value = serde_json::json!({
            "id": "ent-000123-04",
            "account": "account-000123",
            "grant": {"feature": {"feature": "feature-07", "usage_cap": null, "config": {}}},
            "valid_from": 1_799_913_600u64,
            "valid_until": null,
            "offset": -42,
            "min": i64::MIN,
            "max": u64::MAX,
            "ratio": 0.25,
            "status": "active",
            "text": "quote \" back \\ slash / tab \t nl \n bell \u{7} é ✓",
            "geo_rule": {"allow_countries": [], "block_anonymous": false, "deep": [[[true]]]},
            "": "empty name",
        });
        let json = serde_json::to_string(&value).unwrap();
        let stored = round_trip(&json);
        assert_eq!(stored[0], BINARY);
        assert!(
            stored.len() < json.len(),
            "{} of {}",
            stored.len(),
            json.len()
        );
        // An entitlement as serde_json writes it, its names listed: under a
        // third of its JSON.
        let entitlement = br#"{"id":"ent-000123-04","account":"account-000123","grant":{"feature":{"feature":"feature-07","usage_cap":null,"config":{}}},"valid_from":1799913600,"valid_until":null,"grace_period_seconds":0,"seats":null,"usage_cap_overrides":{},"status":"active","geo_rule":{"allow_countries":[],"deny_countries":[],"allow_continents":[],"deny_continents":[],"allow_subdivisions":[],"deny_subdivisions":[],"block_anonymous":false},"offline_policy":null,"required_role":null,"allowed_groups":[],"source_order":null,"revision":123456,"trial":false}"#;
        // Its names, as a role would list them (the model's own list is
        // `tollgate_model::stored::STORED_FIELD_NAMES`).
        fn keys(value: &serde_json::Value, out: &mut Vec<&'static str>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, inner) in map {
                        out.push(Box::leak(key.clone().into_boxed_str()));
                        keys(inner, out);
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|i| keys(i, out)),
                _ => {}
            }
        }
        let mut listed = Vec::new();
        keys(&serde_json::from_slice(entitlement).unwrap(), &mut listed);
        let names = FieldNames::new(Box::leak(listed.into_boxed_slice()));
        let stored = encode(entitlement, &names);
        assert_eq!(
            decode(&stored, &names).unwrap().as_ref(),
            entitlement.as_slice()
        );
        assert!(
            stored.len() * 3 < entitlement.len(),
            "{} of {}",
            stored.len(),
            entitlement.len()
        );
        // Numbers kept as their text when they are not plain integers.
        assert_eq!(
            round_trip("{\"a\":-0,\"b\":1e3,\"c\":-99999999999999999999}")[0],
            BINARY
        );
        // Arrays at the top, and empty ones.
        assert_eq!(round_trip("[1,\"a\",{}]")[0], BINARY);
        assert_eq!(round_trip("{}")[0], BINARY);
        assert_eq!(round_trip("[]")[0], BINARY);
    }

    #[test]
    fn anything_that_would_not_read_back_exactly_is_stored_as_it_is() {
        for raw in [
            "",
            "5",
            "\"a string\"",
            "not json",
            "{\"a\": 1}",          // whitespace
            "{\"a\":1} ",          // trailing bytes
            "{\"a\":\"\\u00e9\"}", // an escape serde_json does not write
            "{\"a\":\"\\/\"}",
            "{\"a\":1",
            "[\"\\x\"]",
        ] {
            let stored = encode(raw.as_bytes(), &names());
            assert_eq!(stored.as_ref(), raw.as_bytes(), "{raw:?}");
            assert_eq!(decode(&stored, &names()).unwrap().as_ref(), raw.as_bytes());
        }
        let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
        assert_eq!(encode(deep.as_bytes(), &names()).as_ref(), deep.as_bytes());
        // Raw bytes that are not UTF-8 at all.
        let bytes = [0xffu8, 0x00, 0x7b];
        assert_eq!(encode(&bytes, &names()).as_ref(), &bytes);
        // Raw bytes that look like a stored form are escaped, and read back.
        for raw in [
            &[BINARY, 0x08, 0x00][..],
            &[ESCAPED][..],
            &[ESCAPED, BINARY][..],
        ] {
            let stored = encode(raw, &names());
            assert_eq!(stored[0], ESCAPED);
            assert_eq!(decode(&stored, &names()).unwrap().as_ref(), raw);
        }
    }

    #[test]
    fn a_damaged_stored_value_is_an_error_never_a_panic() {
        let json = serde_json::to_string(&serde_json::json!({
            "id": "x", "list": [1, 2, {"status": "active"}], "n": -7
        }))
        .unwrap();
        let stored = round_trip(&json);
        for cut in 1..stored.len() {
            assert!(decode(&stored[..cut], &names()).is_err(), "cut at {cut}");
        }
        for at in 1..stored.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = stored.clone();
                bad[at] ^= flip;
                if let Ok(json) = decode(&bad, &names()) {
                    // Whatever it reads is JSON.
                    serde_json::from_slice::<serde_json::Value>(&json).unwrap();
                }
            }
        }
        // A name the list does not have, a count past the end, a long varint.
        assert!(decode(&[BINARY, 0x08, 1, 99, 0x00], &names()).is_err());
        assert!(decode(&[BINARY, 0x07, 0x7f], &names()).is_err());
        assert!(decode(
            &[BINARY, 0x03, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f],
            &names()
        )
        .is_err());
    }

    #[test]
    fn migrating_twice_changes_nothing_the_second_time() {
        for raw in [
            &br#"{"id":"x","n":[1,2]}"#[..],
            b"",
            b"5",
            &[BINARY, 1][..],
            &[ESCAPED][..],
        ] {
            let once = encode(raw, &names()).into_owned();
            assert_eq!(migrate(&once, &names()).as_ref(), once.as_slice());
            assert_eq!(
                decode(&migrate(&once, &names()), &names())
                    .unwrap()
                    .as_ref(),
                raw
            );
        }
        let legacy = br#"{"id":"x"}"#;
        assert_eq!(migrate(legacy, &names())[0], BINARY);
    }

    #[test]
    fn names_missing_from_the_list_are_spelled_out() {
        let with = round_trip("{\"id\":1,\"unlisted\":2}");
        let none = encode(b"{\"id\":1,\"unlisted\":2}", &FieldNames::new(&[])).into_owned();
        assert!(with.len() < none.len());
        assert_eq!(
            decode(&none, &FieldNames::new(&[])).unwrap().as_ref(),
            b"{\"id\":1,\"unlisted\":2}"
        );
    }
}
