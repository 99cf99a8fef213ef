//! AMF0, the value encoding of RTMP commands and data messages (AMF0 specification, Adobe 2007).
//!
//! Every type an encoder sends is read and written. Reading is bounded: nesting deeper than
//! [`MAX_DEPTH`] is an error, no length or count field is trusted beyond the bytes actually present
//! (nothing is allocated from a count: vectors grow as values are actually read), and one top-level
//! call ([`read`], [`read_all`], [`read_prefix`]) decodes at most [`MAX_VALUES`] values, nested ones
//! included.
//!
//! So what a decode holds is bounded twice. By its input: each value takes at least one input byte
//! and becomes one slot of a vector, 32 bytes (56 for an object property), and a vector holds at
//! most four slots per element it has; strings take at most three times their bytes (an invalid
//! UTF-8 byte becomes U+FFFD). And by a ceiling that no count in the input changes: the slots of
//! [`MAX_VALUES`] values take at most 14 MiB (65,536 x 4 x 56 bytes), plus their strings.

use thiserror::Error;

/// Objects and arrays nested deeper than this are refused: real commands nest two or three levels.
pub const MAX_DEPTH: usize = 32;

/// Values one top-level read may produce, nested ones included. A real `onMetaData` holds about 30
/// and a `connect` about 10; without a bound, a strict array of one-byte `null`s turns each input
/// byte into a 32-byte [`Value`], 512 MiB from one 16 MiB message.
pub const MAX_VALUES: usize = 65_536;

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0A;
const DATE: u8 = 0x0B;
const LONG_STRING: u8 = 0x0C;

/// One AMF0 value. Strings longer than 65535 bytes are written as long strings and read back as
/// [`Value::String`], so every value round-trips.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Boolean(bool),
    String(String),
    /// Anonymous object: properties in wire order.
    Object(Vec<(String, Value)>),
    Null,
    Undefined,
    /// Associative array (used by `onMetaData`): properties in wire order.
    EcmaArray(Vec<(String, Value)>),
    StrictArray(Vec<Value>),
    /// Milliseconds since the Unix epoch and the (unused, but carried) time-zone field.
    Date {
        millis: f64,
        time_zone: i16,
    },
}

impl Value {
    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Value::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Value)]> {
        match self {
            Value::Object(p) | Value::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The value of property `name` of an object or ECMA array.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.properties()?.iter().find(|(k, _)| k == name).map(|(_, v)| v)
    }

    /// Shorthand for an object from `(&str, Value)` pairs.
    pub fn object<'a>(props: impl IntoIterator<Item = (&'a str, Value)>) -> Value {
        Value::Object(props.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// Shorthand for a string value.
    pub fn string(s: impl Into<String>) -> Value {
        Value::String(s.into())
    }
}

/// Why an AMF0 byte sequence could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Amf0Error {
    #[error("AMF0 value truncated")]
    Truncated,
    #[error("AMF0 type marker {0:#04x} is not supported")]
    UnsupportedType(u8),
    #[error("AMF0 values nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("AMF0 object-end marker outside an object")]
    UnexpectedObjectEnd,
    #[error("AMF0 input holds more than {MAX_VALUES} values")]
    TooManyValues,
}

/// One top-level read: the input left and the values it may still produce.
struct Reader<'a, 'b> {
    input: &'a mut &'b [u8],
    values_left: usize,
}

impl<'a, 'b> Reader<'a, 'b> {
    fn new(input: &'a mut &'b [u8]) -> Self {
        Self {
            input,
            values_left: MAX_VALUES,
        }
    }

    /// Counts one more value against [`MAX_VALUES`], before it is read.
    fn count_value(&mut self) -> Result<(), Amf0Error> {
        self.values_left = self.values_left.checked_sub(1).ok_or(Amf0Error::TooManyValues)?;
        Ok(())
    }
}

/// Reads every value in `input` until it is used up; more than [`MAX_VALUES`] in all is an error.
pub fn read_all(mut input: &[u8]) -> Result<Vec<Value>, Amf0Error> {
    let mut reader = Reader::new(&mut input);
    let mut values = Vec::new();
    while !reader.input.is_empty() {
        values.push(read_value(&mut reader, 0)?);
    }
    Ok(values)
}

/// Reads values until the input ends or one cannot be read (or would pass [`MAX_VALUES`]); returns
/// those read. For data messages, whose content is informational: an odd value must not end a publish.
pub fn read_prefix(mut input: &[u8]) -> Vec<Value> {
    let mut reader = Reader::new(&mut input);
    let mut values = Vec::new();
    while !reader.input.is_empty() {
        match read_value(&mut reader, 0) {
            Ok(value) => values.push(value),
            Err(_) => break,
        }
    }
    values
}

/// Reads one value (at most [`MAX_VALUES`] with those nested in it) from the front of `input` and
/// advances it past the value.
pub fn read(input: &mut &[u8]) -> Result<Value, Amf0Error> {
    read_value(&mut Reader::new(input), 0)
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], Amf0Error> {
    if input.len() < n {
        return Err(Amf0Error::Truncated);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], Amf0Error> {
    let bytes = take(input, N)?;
    let mut array = [0; N];
    array.copy_from_slice(bytes);
    Ok(array)
}

fn read_u8(input: &mut &[u8]) -> Result<u8, Amf0Error> {
    Ok(take_array::<1>(input)?[0])
}

fn read_u16(input: &mut &[u8]) -> Result<u16, Amf0Error> {
    Ok(u16::from_be_bytes(take_array(input)?))
}

fn read_u32(input: &mut &[u8]) -> Result<u32, Amf0Error> {
    Ok(u32::from_be_bytes(take_array(input)?))
}

fn read_f64(input: &mut &[u8]) -> Result<f64, Amf0Error> {
    Ok(f64::from_be_bytes(take_array(input)?))
}

/// Encoders send ASCII; anything else is kept readable rather than refused.
fn utf8(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_short_string(input: &mut &[u8]) -> Result<String, Amf0Error> {
    let len = read_u16(input)? as usize;
    Ok(utf8(take(input, len)?))
}

fn read_value(reader: &mut Reader<'_, '_>, depth: usize) -> Result<Value, Amf0Error> {
    if depth > MAX_DEPTH {
        return Err(Amf0Error::TooDeep);
    }
    reader.count_value()?;
    let input = &mut *reader.input;
    let marker = read_u8(input)?;
    Ok(match marker {
        NUMBER => Value::Number(read_f64(input)?),
        BOOLEAN => Value::Boolean(read_u8(input)? != 0),
        STRING => Value::String(read_short_string(input)?),
        LONG_STRING => {
            let len = read_u32(input)? as usize;
            Value::String(utf8(take(input, len)?))
        }
        OBJECT => Value::Object(read_properties(reader, depth)?),
        NULL => Value::Null,
        UNDEFINED => Value::Undefined,
        ECMA_ARRAY => {
            // The count is a hint that encoders get wrong; the end marker is what ends the array.
            let _count = read_u32(input)?;
            Value::EcmaArray(read_properties(reader, depth)?)
        }
        STRICT_ARRAY => {
            let count = read_u32(input)? as usize;
            // Each element takes at least one byte: a count beyond that is a lie.
            if count > input.len() {
                return Err(Amf0Error::Truncated);
            }
            // Not `with_capacity(count)`: the count is the peer's word, and a vector that grows as
            // elements are actually read never holds more than twice what they take.
            let mut items = Vec::new();
            for _ in 0..count {
                items.push(read_value(reader, depth + 1)?);
            }
            Value::StrictArray(items)
        }
        DATE => {
            let millis = read_f64(input)?;
            let time_zone = i16::from_be_bytes(take_array(input)?);
            Value::Date { millis, time_zone }
        }
        OBJECT_END => return Err(Amf0Error::UnexpectedObjectEnd),
        other => return Err(Amf0Error::UnsupportedType(other)),
    })
}

/// Properties up to the object-end marker (an empty name followed by 0x09). Some encoders end an
/// ECMA array with the message instead of the marker, so the end of input also ends an object or
/// array: a value is never refused for lacking its last three bytes.
fn read_properties(reader: &mut Reader<'_, '_>, depth: usize) -> Result<Vec<(String, Value)>, Amf0Error> {
    let mut props = Vec::new();
    loop {
        let input = &mut *reader.input;
        if input.is_empty() {
            return Ok(props);
        }
        let name = read_short_string(input)?;
        if name.is_empty() && input.first() == Some(&OBJECT_END) {
            *input = input.get(1..).unwrap_or_default();
            return Ok(props);
        }
        let value = read_value(reader, depth + 1)?;
        props.push((name, value));
    }
}

/// Appends the encoding of `value` to `out`.
pub fn write(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Number(n) => {
            out.push(NUMBER);
            out.extend_from_slice(&n.to_be_bytes());
        }
        Value::Boolean(b) => {
            out.push(BOOLEAN);
            out.push(u8::from(*b));
        }
        Value::String(s) => match u16::try_from(s.len()) {
            Ok(len) => {
                out.push(STRING);
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Err(_) => {
                out.push(LONG_STRING);
                out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        },
        Value::Object(props) => {
            out.push(OBJECT);
            write_properties(out, props);
        }
        Value::Null => out.push(NULL),
        Value::Undefined => out.push(UNDEFINED),
        Value::EcmaArray(props) => {
            out.push(ECMA_ARRAY);
            out.extend_from_slice(&(props.len() as u32).to_be_bytes());
            write_properties(out, props);
        }
        Value::StrictArray(items) => {
            out.push(STRICT_ARRAY);
            out.extend_from_slice(&(items.len() as u32).to_be_bytes());
            for item in items {
                write(out, item);
            }
        }
        Value::Date { millis, time_zone } => {
            out.push(DATE);
            out.extend_from_slice(&millis.to_be_bytes());
            out.extend_from_slice(&time_zone.to_be_bytes());
        }
    }
}

fn write_properties(out: &mut Vec<u8>, props: &[(String, Value)]) {
    for (name, value) in props {
        // Property names are short strings; a longer one cannot be encoded and is cut.
        let name = name.as_bytes();
        let len = name.len().min(usize::from(u16::MAX));
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(name.get(..len).unwrap_or_default());
        write(out, value);
    }
    out.extend_from_slice(&[0, 0, OBJECT_END]);
}

/// Encodes a sequence of values.
pub fn encode(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        write(&mut out, value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<f64>()
                .prop_filter("NaN never equals itself", |n| !n.is_nan())
                .prop_map(Value::Number),
            any::<bool>().prop_map(Value::Boolean),
            ".{0,40}".prop_map(Value::String),
            Just(Value::Null),
            Just(Value::Undefined),
            (any::<i32>(), any::<i16>()).prop_map(|(m, tz)| Value::Date {
                millis: f64::from(m),
                time_zone: tz
            }),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            let props = prop::collection::vec(("[a-zA-Z]{1,12}", inner.clone()), 0..6);
            prop_oneof![
                props.clone().prop_map(Value::Object),
                props.prop_map(Value::EcmaArray),
                prop::collection::vec(inner, 0..6).prop_map(Value::StrictArray),
            ]
        })
    }

    proptest! {
        #[test]
        fn values_round_trip(values in prop::collection::vec(value(), 0..5)) {
            prop_assert_eq!(read_all(&encode(&values)).unwrap(), values);
        }

        #[test]
        fn any_bytes_read_or_fail_cleanly(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = read_all(&bytes);
        }

        /// Strict arrays of any claimed count, nested in any way, with nulls between them: each
        /// top-level read yields at most `MAX_VALUES` values, and no vector holds more than four
        /// slots per element it has (nothing was reserved from a count).
        #[test]
        fn nested_array_bombs_stay_within_max_values(
            pieces in prop::collection::vec(
                prop_oneof![
                    (0u32..80_000).prop_map(|count| strict_array_header(count).to_vec()),
                    (1usize..40_000).prop_map(|n| vec![NULL; n]),
                ],
                1..12,
            )
        ) {
            let bytes = pieces.concat();
            let check = |values: &[Value]| {
                assert!(count_values(values) <= MAX_VALUES);
                assert!(slack_is_bounded(values));
            };
            match read_all(&bytes) {
                Ok(values) => check(&values),
                Err(e) => prop_assert!(
                    matches!(e, Amf0Error::Truncated | Amf0Error::TooManyValues | Amf0Error::TooDeep),
                    "{e}"
                ),
            }
            check(&read_prefix(&bytes));
            if let Ok(value) = read(&mut &bytes[..]) {
                check(std::slice::from_ref(&value));
            }
        }

        /// A strict array of `n` nulls: read whole up to the limit, refused past it, never reserved
        /// from its count.
        #[test]
        fn strict_arrays_are_read_up_to_max_values(n in prop_oneof![0u32..100, 65_400u32..65_700, 0u32..200_000]) {
            let bytes = null_bomb(n);
            match read_all(&bytes) {
                // The array itself is one value, its elements the others.
                Ok(values) => {
                    prop_assert!((n as usize) < MAX_VALUES);
                    let [Value::StrictArray(items)] = &values[..] else { panic!("{values:?}") };
                    prop_assert_eq!(items.len(), n as usize);
                    prop_assert!(items.capacity() <= (2 * items.len()).max(4));
                }
                Err(e) => {
                    prop_assert!(n as usize >= MAX_VALUES);
                    prop_assert_eq!(e, Amf0Error::TooManyValues);
                }
            }
        }
    }

    fn strict_array_header(count: u32) -> [u8; 5] {
        let [a, b, c, d] = count.to_be_bytes();
        [STRICT_ARRAY, a, b, c, d]
    }

    /// A strict array of `count` nulls: one byte of input per 32-byte `Value`.
    fn null_bomb(count: u32) -> Vec<u8> {
        let mut bytes = strict_array_header(count).to_vec();
        bytes.resize(bytes.len() + count as usize, NULL);
        bytes
    }

    /// Values in `values`, nested ones included.
    fn count_values(values: &[Value]) -> usize {
        values
            .iter()
            .map(|value| {
                1 + match value {
                    Value::StrictArray(items) => count_values(items),
                    Value::Object(props) | Value::EcmaArray(props) => props
                        .iter()
                        .map(|(_, v)| count_values(std::slice::from_ref(v)))
                        .sum(),
                    _ => 0,
                }
            })
            .sum()
    }

    /// Every vector holds at most four slots per element (its first allocation has four).
    fn slack_is_bounded(values: &[Value]) -> bool {
        values.iter().all(|value| match value {
            Value::StrictArray(items) => {
                items.capacity() <= 4 * items.len().max(1) && slack_is_bounded(items)
            }
            Value::Object(props) | Value::EcmaArray(props) => {
                props.capacity() <= 4 * props.len().max(1)
                    && props
                        .iter()
                        .all(|(_, v)| slack_is_bounded(std::slice::from_ref(v)))
            }
            _ => true,
        })
    }

    /// The bomb of the hardening issue at 4 MiB: a strict array claiming 4 Mi elements, and as many
    /// one-byte nulls. Reserving from the count took 128 MiB at once; reading it now stops at
    /// `MAX_VALUES`, having held 2 MiB of values.
    #[test]
    fn a_strict_array_of_millions_of_nulls_is_refused() {
        let bomb = null_bomb(4 << 20);
        assert_eq!(read_all(&bomb), Err(Amf0Error::TooManyValues));
        assert_eq!(read(&mut &bomb[..]), Err(Amf0Error::TooManyValues));
        assert_eq!(read_prefix(&bomb), vec![]);
        // A data message keeps the values before the bomb.
        let mut data = encode(&[Value::string("onMetaData")]);
        data.extend_from_slice(&bomb);
        assert_eq!(read_prefix(&data), vec![Value::string("onMetaData")]);
    }

    #[test]
    fn max_values_counts_every_value_exactly() {
        let bytes = null_bomb(MAX_VALUES as u32 - 1);
        let values = read_all(&bytes).unwrap();
        assert_eq!(count_values(&values), MAX_VALUES);
        assert_eq!(
            read_all(&null_bomb(MAX_VALUES as u32)),
            Err(Amf0Error::TooManyValues)
        );
        // Top-level values count too, and one `read_all` is one budget.
        let mut two = bytes.clone();
        two.push(NULL);
        assert_eq!(read_all(&two), Err(Amf0Error::TooManyValues));
        // Each `read` is its own top-level call.
        let mut input = &two[..];
        assert!(read(&mut input).is_ok());
        assert_eq!(read(&mut input), Ok(Value::Null));
    }

    /// Arrays nested 30 deep, each holding the next level and 3000 nulls and claiming as many
    /// elements as there are bytes after its header (the most a count can claim and pass the
    /// truncation check): 90,000 values in all, refused. Reserving from each count took 86 MB.
    #[test]
    fn nested_arrays_count_every_level() {
        let mut bytes = Vec::new();
        for _ in 0..30 {
            let count = bytes.len() as u32 + 3000;
            let mut level = strict_array_header(count).to_vec();
            level.append(&mut bytes);
            level.extend([NULL; 3000]);
            bytes = level;
        }
        assert_eq!(read_all(&bytes), Err(Amf0Error::TooManyValues));
        assert_eq!(read_prefix(&bytes), vec![]);
    }

    /// Object and ECMA array properties count as values: an object of 70,000 `"" : null` takes
    /// 210 KB of input and would be 3.9 MB of properties.
    #[test]
    fn properties_count_as_values() {
        for marker in [OBJECT, ECMA_ARRAY] {
            let mut bytes = vec![marker];
            if marker == ECMA_ARRAY {
                bytes.extend(0u32.to_be_bytes());
            }
            for _ in 0..70_000 {
                bytes.extend([0, 0, NULL]);
            }
            assert_eq!(read_all(&bytes), Err(Amf0Error::TooManyValues), "{marker}");
        }
        let mut small = vec![OBJECT];
        for _ in 0..1000 {
            small.extend([0, 1, b'a', NULL]);
        }
        let [Value::Object(props)] = &read_all(&small).unwrap()[..] else {
            panic!()
        };
        assert_eq!(props.len(), 1000);
    }

    #[test]
    fn long_strings_round_trip() {
        let long = Value::String("x".repeat(70_000));
        let bytes = encode(std::slice::from_ref(&long));
        assert_eq!(bytes[0], LONG_STRING);
        assert_eq!(read_all(&bytes).unwrap(), vec![long]);
    }

    #[test]
    fn nesting_is_limited() {
        let mut bytes = [STRICT_ARRAY, 0, 0, 0, 1].repeat(MAX_DEPTH + 2);
        bytes.push(NULL);
        assert_eq!(read_all(&bytes), Err(Amf0Error::TooDeep));
        let mut ok = [STRICT_ARRAY, 0, 0, 0, 1].repeat(MAX_DEPTH);
        ok.push(NULL);
        assert!(read_all(&ok).is_ok());
    }

    #[test]
    fn too_many_values_is_named() {
        assert_eq!(
            Amf0Error::TooManyValues.to_string(),
            "AMF0 input holds more than 65536 values"
        );
    }

    #[test]
    fn lying_counts_do_not_allocate() {
        assert_eq!(
            read_all(&[STRICT_ARRAY, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(Amf0Error::Truncated)
        );
        assert_eq!(
            read_all(&[LONG_STRING, 0xFF, 0xFF, 0xFF, 0xFF, b'a']),
            Err(Amf0Error::Truncated)
        );
    }

    #[test]
    fn ecma_array_without_end_marker_is_read() {
        let mut bytes = vec![ECMA_ARRAY, 0, 0, 0, 1, 0, 1, b'w'];
        write(&mut bytes, &Value::Number(640.0));
        let values = read_all(&bytes).unwrap();
        assert_eq!(
            values,
            vec![Value::EcmaArray(vec![("w".into(), Value::Number(640.0))])]
        );
    }

    #[test]
    fn unsupported_markers_are_named() {
        assert_eq!(read_all(&[0x11]), Err(Amf0Error::UnsupportedType(0x11)));
        assert_eq!(read_all(&[OBJECT_END]), Err(Amf0Error::UnexpectedObjectEnd));
    }
}
