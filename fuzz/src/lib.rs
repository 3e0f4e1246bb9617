//! Helpers shared by the fuzz targets.

/// Cuts a stream into pseudo-random pieces (xorshift64*), so a decoder is fed the same bytes
/// in another chunking than in one piece.
pub struct Chunker(pub u64);

impl Chunker {
    /// The length of the next piece, 1..=`left` (and at most 64).
    pub fn next(&mut self, left: usize) -> usize {
        let mut x = self.0 | 1;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        let r = x.wrapping_mul(0x2545_f491_4f6c_dd1d);
        1 + (r % left as u64) as usize % (1 + (r >> 32) as usize % 64)
    }
}
