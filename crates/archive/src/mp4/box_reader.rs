//! Reads ISO BMFF boxes (ISO 14496-12 §4.2) out of a byte slice: every field read is bounded by
//! the slice, so a lying size or count is an error, never an overrun.

use crate::mp4::Mp4Error;

/// Big-endian fields from the front of a slice.
#[derive(Debug, Clone)]
pub(super) struct BoxReader<'a> {
    data: &'a [u8],
}

impl<'a> BoxReader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    pub(super) fn remaining(&self) -> usize {
        self.data.len()
    }

    pub(super) fn bytes(&mut self, count: usize) -> Result<&'a [u8], Mp4Error> {
        let Some((head, rest)) = self.data.split_at_checked(count) else {
            return Err(Mp4Error::malformed(format!(
                "a field of {count} bytes runs past its box"
            )));
        };
        self.data = rest;
        Ok(head)
    }

    pub(super) fn skip(&mut self, count: usize) -> Result<(), Mp4Error> {
        self.bytes(count).map(|_| ())
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Mp4Error> {
        let bytes = self.bytes(N)?;
        let mut array = [0; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }

    pub(super) fn u8(&mut self) -> Result<u8, Mp4Error> {
        self.array::<1>().map(|[b]| b)
    }

    pub(super) fn u16(&mut self) -> Result<u16, Mp4Error> {
        self.array().map(u16::from_be_bytes)
    }

    pub(super) fn u24(&mut self) -> Result<u32, Mp4Error> {
        let [a, b, c] = self.array()?;
        Ok(u32::from_be_bytes([0, a, b, c]))
    }

    pub(super) fn u32(&mut self) -> Result<u32, Mp4Error> {
        self.array().map(u32::from_be_bytes)
    }

    pub(super) fn i32(&mut self) -> Result<i32, Mp4Error> {
        self.array().map(i32::from_be_bytes)
    }

    pub(super) fn u64(&mut self) -> Result<u64, Mp4Error> {
        self.array().map(u64::from_be_bytes)
    }

    pub(super) fn fourcc(&mut self) -> Result<[u8; 4], Mp4Error> {
        self.array()
    }

    /// A FullBox's version and flags.
    pub(super) fn version_flags(&mut self) -> Result<(u8, u32), Mp4Error> {
        let version = self.u8()?;
        Ok((version, self.u24()?))
    }

    /// A field that is 32 bits in version 0 of a box and 64 bits in version 1.
    pub(super) fn u32_or_u64(&mut self, version: u8) -> Result<u64, Mp4Error> {
        if version == 1 {
            self.u64()
        } else {
            self.u32().map(u64::from)
        }
    }
}

/// One box inside a parent's body.
#[derive(Debug, Clone, Copy)]
pub(super) struct ChildBox<'a> {
    pub(super) kind: [u8; 4],
    /// The content after the header.
    pub(super) body: &'a [u8],
    /// Header and content, for copying a box as is.
    pub(super) whole: &'a [u8],
}

/// The boxes that make up `data` (a parent's body), in order. A box that does not fit its parent
/// is an error: inside a box that is whole, nothing may be cut.
pub(super) fn children(data: &[u8]) -> Children<'_> {
    Children { data }
}

#[derive(Debug)]
pub(super) struct Children<'a> {
    data: &'a [u8],
}

impl<'a> Iterator for Children<'a> {
    type Item = Result<ChildBox<'a>, Mp4Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.data.is_empty() {
            return None;
        }
        let result = child(self.data);
        match &result {
            Ok((_, rest)) => self.data = rest,
            Err(_) => self.data = &[],
        }
        Some(result.map(|(child, _)| child))
    }
}

fn child(data: &[u8]) -> Result<(ChildBox<'_>, &[u8]), Mp4Error> {
    let mut reader = BoxReader::new(data);
    let size = reader.u32()?;
    let kind = reader.fourcc()?;
    let (header, size) = match size {
        0 => (8, data.len() as u64),
        1 => (16, reader.u64()?),
        size => (8, u64::from(size)),
    };
    let size = usize::try_from(size)
        .ok()
        .filter(|size| *size >= header && *size <= data.len())
        .ok_or_else(|| {
            Mp4Error::malformed(format!(
                "box {} of {size} bytes does not fit its parent",
                fourcc_name(&kind)
            ))
        })?;
    let (whole, rest) = data.split_at(size);
    let body = whole.get(header..).unwrap_or_default();
    Ok((ChildBox { kind, body, whole }, rest))
}

/// The first child of `kind`, if any.
pub(super) fn find<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<Option<ChildBox<'a>>, Mp4Error> {
    for child in children(data) {
        let child = child?;
        if &child.kind == kind {
            return Ok(Some(child));
        }
    }
    Ok(None)
}

/// The first child of `kind`, which must be there.
pub(super) fn require<'a>(data: &'a [u8], kind: &[u8; 4]) -> Result<ChildBox<'a>, Mp4Error> {
    find(data, kind)?.ok_or_else(|| Mp4Error::malformed(format!("no {} box", fourcc_name(kind))))
}

/// A box type for a message: printable, whatever the bytes.
pub(super) fn fourcc_name(kind: &[u8; 4]) -> String {
    kind.iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_are_bounded_by_their_parent() {
        let data = [
            0, 0, 0, 10, b'f', b'r', b'e', b'e', 1, 2, 0, 0, 0, 8, b's', b'k', b'i', b'p',
        ];
        let boxes: Vec<_> = children(&data).collect::<Result<_, _>>().unwrap();
        assert_eq!(boxes.len(), 2);
        assert_eq!((&boxes[0].kind, boxes[0].body), (b"free", &[1, 2][..]));
        assert_eq!(boxes[1].whole.len(), 8);
        // A size past the end, a size below the header, a cut header.
        for bad in [
            &[0, 0, 0, 11, b'f', b'r', b'e', b'e', 1, 2][..],
            &[0, 0, 0, 7, b'f', b'r', b'e', b'e'],
            &[0, 0, 0],
        ] {
            assert!(children(bad).any(|c| c.is_err()), "{bad:?}");
        }
        // Size 0: to the end of the parent.
        let to_end = [0, 0, 0, 0, b'm', b'd', b'a', b't', 9];
        assert_eq!(require(&to_end, b"mdat").unwrap().body, &[9]);
    }

    #[test]
    fn fields_past_the_end_are_errors() {
        let mut reader = BoxReader::new(&[1, 2, 3]);
        assert_eq!(reader.u16().unwrap(), 0x0102);
        assert!(reader.u16().is_err());
        assert!(reader.bytes(usize::MAX).is_err());
    }
}
