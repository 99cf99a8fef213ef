//! Writes ISO BMFF boxes (ISO 14496-12 §4.2): big-endian fields into one buffer, each box's size
//! patched in when it closes.

/// A buffer of nested boxes. `begin`/`end` pairs bracket each box.
#[derive(Debug, Default)]
pub(super) struct BoxWriter {
    buf: Vec<u8>,
    open: Vec<usize>,
    /// A box grew past 4 GiB, which a 32-bit size cannot say; the bytes are unusable then.
    oversize: bool,
}

impl BoxWriter {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
            ..Self::default()
        }
    }

    pub(super) fn begin(&mut self, kind: &[u8; 4]) {
        self.open.push(self.buf.len());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(kind);
    }

    /// A FullBox: version and 24 bits of flags after the header (§4.2).
    pub(super) fn begin_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) {
        self.begin(kind);
        self.u8(version);
        self.u24(flags);
    }

    /// Closes the innermost open box.
    pub(super) fn end(&mut self) {
        if let Some(start) = self.open.pop() {
            let size = u32::try_from(self.buf.len() - start).unwrap_or_else(|_| {
                self.oversize = true;
                0
            });
            self.patch_u32(start, size);
        }
    }

    /// A leaf box holding `body` as is.
    pub(super) fn leaf(&mut self, kind: &[u8; 4], body: &[u8]) {
        self.begin(kind);
        self.bytes(body);
        self.end();
    }

    pub(super) fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    pub(super) fn u16(&mut self, value: u16) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn u24(&mut self, value: u32) {
        self.buf
            .extend_from_slice(value.to_be_bytes().get(1..).unwrap_or_default());
    }

    pub(super) fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn i32(&mut self, value: i32) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(super) fn bytes(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    pub(super) fn zeros(&mut self, count: usize) {
        self.buf.resize(self.buf.len() + count, 0);
    }

    /// Where the next byte goes, for a field patched later.
    pub(super) fn position(&self) -> usize {
        self.buf.len()
    }

    pub(super) fn patch_u32(&mut self, at: usize, value: u32) {
        if let Some(field) = self.buf.get_mut(at..at + 4) {
            field.copy_from_slice(&value.to_be_bytes());
        }
    }

    pub(super) fn len(&self) -> usize {
        self.buf.len()
    }

    /// The bytes, unless a box overflowed its 32-bit size.
    pub(super) fn finish(self) -> Option<Vec<u8>> {
        (!self.oversize && self.open.is_empty()).then_some(self.buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_sizes_are_patched() {
        let mut w = BoxWriter::default();
        w.begin(b"moov");
        w.begin_full(b"mvhd", 1, 0x020001);
        w.u16(7);
        w.end();
        w.leaf(b"free", b"ab");
        w.end();
        let bytes = w.finish().unwrap();
        assert_eq!(
            bytes,
            [
                0, 0, 0, 32, b'm', b'o', b'o', b'v', 0, 0, 0, 14, b'm', b'v', b'h', b'd', 1, 2, 0, 1, 0, 7,
                0, 0, 0, 10, b'f', b'r', b'e', b'e', b'a', b'b'
            ]
        );
    }

    #[test]
    fn an_open_box_is_not_finished() {
        let mut w = BoxWriter::default();
        w.begin(b"moov");
        assert!(w.finish().is_none());
    }
}
