//! A minimal protobuf wire-format reader, for the few CRI messages the Sandbox API hands us
//! inside an `Any` (Tender does not carry CRI's generated types).
//!
//! Only what proto3 messages of scalars, strings, maps and sub-messages use: varints (wire
//! type 0), fixed 64/32 (1, 5, skipped) and length-delimited fields (2). Groups (3, 4) and any
//! truncated or over-long input are errors, never panics: the bytes come from the socket.

/// One field of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    /// A fixed-width field: its value is not needed by any caller.
    Fixed,
}

/// Nesting bound: CRI's messages nest a few levels; anything deeper is not ours.
pub const MAX_DEPTH: usize = 16;

fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut out: u64 = 0;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos).ok_or("truncated varint")?;
        *pos += 1;
        out |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(out);
        }
    }
    Err("varint longer than 10 bytes".into())
}

/// The fields of one message, in wire order (repeated fields appear once per element).
pub fn fields(buf: &[u8]) -> Result<Vec<(u32, Value<'_>)>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < buf.len() {
        let key = varint(buf, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Value::Varint(varint(buf, &mut pos)?),
            1 | 5 => {
                let width = if key & 7 == 1 { 8 } else { 4 };
                if buf.len() - pos < width {
                    return Err("truncated fixed-width field".into());
                }
                pos += width;
                Value::Fixed
            }
            2 => {
                let len =
                    usize::try_from(varint(buf, &mut pos)?).map_err(|_| "length out of range")?;
                if buf.len() - pos < len {
                    return Err(format!("field {number}: length {len} past the end"));
                }
                let v = &buf[pos..pos + len];
                pos += len;
                Value::Bytes(v)
            }
            w => return Err(format!("field {number}: unsupported wire type {w}")),
        };
        out.push((number, value));
    }
    Ok(out)
}

/// A length-delimited field as UTF-8 text.
pub fn string(v: Value<'_>, what: &str) -> Result<String, String> {
    match v {
        Value::Bytes(b) => std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| format!("{what}: not UTF-8")),
        _ => Err(format!("{what}: not a string")),
    }
}

/// A length-delimited field as a sub-message's bytes.
pub fn message<'a>(v: Value<'a>, what: &str) -> Result<&'a [u8], String> {
    match v {
        Value::Bytes(b) => Ok(b),
        _ => Err(format!("{what}: not a message")),
    }
}

/// A varint field.
pub fn varint_value(v: Value<'_>, what: &str) -> Result<u64, String> {
    match v {
        Value::Varint(n) => Ok(n),
        _ => Err(format!("{what}: not a varint")),
    }
}

/// A `map<string, string>` entry (key = 1, value = 2).
pub fn map_entry(v: Value<'_>, what: &str) -> Result<(String, String), String> {
    let (mut k, mut val) = (String::new(), String::new());
    for (n, f) in fields(message(v, what)?)? {
        match n {
            1 => k = string(f, what)?,
            2 => val = string(f, what)?,
            _ => {}
        }
    }
    Ok((k, val))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fields_and_rejects_bad_input() {
        // field 1 varint 150; field 2 "hi"
        let buf = [0x08, 0x96, 0x01, 0x12, 0x02, b'h', b'i'];
        let f = fields(&buf).expect("valid");
        assert_eq!(f[0], (1, Value::Varint(150)));
        assert_eq!(string(f[1].1, "x").as_deref(), Ok("hi"));
        for bad in [
            &[0x12, 0x05, b'a'][..], // length past the end
            &[0x08][..],             // truncated varint
            &[0x0b][..],             // group
            &[0x00, 0x00][..],       // field 0
            &[
                0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
        ] {
            assert!(fields(bad).is_err(), "{bad:?}");
        }
    }
}
