//! Identifiers and secrets: stream and output ids (32 lowercase hex, random) and stream keys
//! (30 random alphanumerics). All come from the thread-local CSPRNG, seeded by the OS.

use std::fmt::{self, Write as _};

use rand::RngExt;
use rand::distr::Alphanumeric;

/// 128 random bits as 32 lowercase hex digits.
pub fn random_hex128() -> String {
    let bytes: [u8; 16] = rand::rng().random();
    bytes.iter().fold(String::with_capacity(32), |mut out, b| {
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// `len` random decimal digits.
pub fn random_digits(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b'0' + rng.random_range(0..10u8)))
        .collect()
}

/// `len` random characters from `[A-Za-z0-9]`.
pub fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn is_hex128(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// A fresh random id.
            pub fn generate() -> Self {
                Self(random_hex128())
            }

            /// Accepts only the canonical form (32 lowercase hex digits).
            pub fn parse(s: &str) -> Option<Self> {
                is_hex128(s).then(|| Self(s.to_owned()))
            }

            /// The id as the API shows it.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

hex_id!(
    /// Identifies a live stream.
    StreamId
);
hex_id!(
    /// Identifies an output of a live stream.
    OutputId
);

/// The secret an encoder presents to publish to a stream.
#[derive(Clone, PartialEq, Eq)]
pub struct StreamKey(String);

impl StreamKey {
    /// Length of generated keys: 30 alphanumerics is about 178 bits.
    pub const LEN: usize = 30;

    /// A fresh random key.
    pub fn generate() -> Self {
        Self(random_alphanumeric(Self::LEN))
    }

    /// Wraps a key read from the store.
    pub fn from_stored(s: String) -> Self {
        Self(s)
    }

    /// The key as given to the encoder.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

// Keys are secrets: keep them out of logs and panics.
impl fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamKey(…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_lowercase_hex_and_distinct() {
        let a = StreamId::generate();
        let b = StreamId::generate();
        assert_ne!(a, b);
        assert!(is_hex128(a.as_str()), "{a}");
        assert_eq!(StreamId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn parse_rejects_non_canonical_ids() {
        for bad in [
            "",
            "abc",
            &"A".repeat(32),
            &"g".repeat(32),
            &"0".repeat(33),
            "../etc/passwd",
        ] {
            assert_eq!(OutputId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn stream_keys_are_30_alphanumerics() {
        let k = StreamKey::generate();
        assert_eq!(k.as_str().len(), 30);
        assert!(k.as_str().bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(k, StreamKey::generate());
    }

    #[test]
    fn keys_stay_out_of_logs() {
        let k = StreamKey::from_stored("abcDEF123".into());
        assert!(!format!("{k:?}").contains("abc"));
    }
}
