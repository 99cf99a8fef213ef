//! Every stream's key, held by its digest, so that a publish attempt is checked without a trip
//! to the store: an unknown key (anyone can try one) costs a hash and a map lookup.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};

use crate::ids::{StreamId, StreamKey};
use crate::sync;

type KeyDigest = [u8; 32];

/// Stream keys by SHA-256 digest. Looking a digest up says nothing about the key it came from,
/// so the lookup's timing reveals nothing about how close a guess was.
#[derive(Debug, Default)]
pub(super) struct KeyIndex {
    streams: RwLock<HashMap<KeyDigest, StreamId>>,
}

fn digest(key: &str) -> KeyDigest {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyIndex {
    pub(super) fn new(keys: impl IntoIterator<Item = (StreamId, StreamKey)>) -> Self {
        let streams = keys
            .into_iter()
            .map(|(id, key)| (digest(key.as_str()), id))
            .collect();
        Self {
            streams: RwLock::new(streams),
        }
    }

    /// The stream whose key is `presented`.
    pub(super) fn find(&self, presented: &str) -> Option<StreamId> {
        let wanted = digest(presented);
        // A poisoned lock still holds a whole map: every update is one insert or remove.
        let streams = sync::read(&self.streams);
        streams.get(&wanted).cloned()
    }

    pub(super) fn insert(&self, key: &StreamKey, id: StreamId) {
        let mut streams = sync::write(&self.streams);
        streams.insert(digest(key.as_str()), id);
    }

    pub(super) fn remove(&self, id: &StreamId) {
        let mut streams = sync::write(&self.streams);
        streams.retain(|_, stream| stream != id);
    }

    /// Streams known.
    pub(super) fn len(&self) -> usize {
        sync::read(&self.streams).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_exact_keys_only() {
        let (a, b) = (StreamId::generate(), StreamId::generate());
        let key_a = StreamKey::from_stored("abcDEF123".into());
        let index = KeyIndex::new([(a.clone(), key_a.clone())]);
        index.insert(&StreamKey::from_stored("other".into()), b.clone());
        assert_eq!(index.find("abcDEF123"), Some(a.clone()));
        assert_eq!(index.find("other"), Some(b));
        for wrong in ["abcDEF12", "abcDEF1234", "ABCDEF123", ""] {
            assert_eq!(index.find(wrong), None, "{wrong}");
        }
        index.remove(&a);
        assert_eq!(index.find("abcDEF123"), None);
        assert_eq!(index.len(), 1);
    }
}
