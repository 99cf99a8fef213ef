//! AMF0 decoding on arbitrary bytes, and the encoder against the decoder.
//!
//! Input: the bytes `amf0::read_all` reads. Checked besides "no panic": whatever it reads, `encode`
//! writes back into bytes that `read_all` reads as the same values (values holding a NaN are
//! skipped, NaN being unequal to itself).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxcast_rtmp::amf0::{self, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(values) = amf0::read_all(data) else {
        return;
    };
    if values.iter().any(has_nan) {
        return;
    }
    let bytes = amf0::encode(&values);
    let again = amf0::read_all(&bytes);
    assert_eq!(again.as_ref(), Ok(&values), "re-encoded as {bytes:02x?}");
});

fn has_nan(value: &Value) -> bool {
    match value {
        Value::Number(n) | Value::Date { millis: n, .. } => n.is_nan(),
        Value::Object(props) | Value::EcmaArray(props) => props.iter().any(|(_, v)| has_nan(v)),
        Value::StrictArray(items) => items.iter().any(has_nan),
        Value::Boolean(_) | Value::String(_) | Value::Null | Value::Undefined => false,
    }
}
