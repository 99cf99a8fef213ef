//! What the fuzz targets share: cutting one input into the pieces a socket might deliver.

/// Splits `data` into consecutive pieces whose sizes come from `plan`, used cyclically: a plan byte
/// of 0 takes everything left, 1..=127 takes that many bytes, 128..=255 takes `(b - 127) * 64`
/// (64 to 8192). An empty plan gives `data` in one piece. The pieces always cover all of `data`.
pub fn pieces<'a>(plan: &'a [u8], mut data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut step = plan.iter().cycle();
    std::iter::from_fn(move || {
        if data.is_empty() {
            return None;
        }
        let size = match step.next().copied() {
            None | Some(0) => data.len(),
            Some(b @ 1..=127) => usize::from(b),
            Some(b) => usize::from(b - 127) * 64,
        };
        let (piece, rest) = data.split_at(size.min(data.len()));
        data = rest;
        Some(piece)
    })
}

/// Splits off the first `N` bytes of the input as control bytes; short inputs give zeros.
pub fn header<const N: usize>(data: &[u8]) -> ([u8; N], &[u8]) {
    let mut head = [0u8; N];
    let n = N.min(data.len());
    head[..n].copy_from_slice(&data[..n]);
    (head, &data[n..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_input() {
        let data: Vec<u8> = (0..=255).cycle().take(20_000).collect();
        for plan in [&[][..], &[0], &[1], &[3, 200, 0], &[128, 255, 7]] {
            let joined: Vec<u8> = pieces(plan, &data).flatten().copied().collect();
            assert_eq!(joined, data);
        }
        assert_eq!(pieces(&[2], b"abcde").collect::<Vec<_>>(), [&b"ab"[..], b"cd", b"e"]);
    }
}
