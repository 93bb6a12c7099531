//! Small deterministic pseudo-random helpers (no external dependency).
//!
//! Everything the generator produces is derived from the user's seed through these
//! functions, so identical arguments give byte-identical output on every machine.

/// SplitMix64 (Steele, Lea & Flood 2014): tiny, fast, and good enough for test data.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64 { state: seed }
    }

    #[inline]
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// Uniform integer in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// The SplitMix64 finaliser: a bijective 64-bit mixing function.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash a seed and a path of integers into one 64-bit value.
pub(crate) fn derive(seed: u64, parts: &[u64]) -> u64 {
    let mut h = mix64(seed ^ 0x6265_656C_6462_7275); // "beeldbru"
    for (i, p) in parts.iter().enumerate() {
        h = mix64(h ^ mix64(p.wrapping_add((i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))));
    }
    h
}

/// A UID under the `2.25.` root (ITU-T X.667: decimal form of a 128-bit number),
/// derived deterministically from the seed and a path of integers.
pub(crate) fn uid(seed: u64, parts: &[u64]) -> String {
    let hi = derive(seed, parts);
    let lo = mix64(hi ^ derive(seed.rotate_left(17), parts));
    let mut v = ((hi as u128) << 64) | lo as u128;
    if v == 0 {
        v = 1;
    }
    format!("2.25.{v}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_is_valid_and_stable() {
        let a = uid(1, &[2, 3]);
        assert_eq!(a, uid(1, &[2, 3]));
        assert_ne!(a, uid(1, &[3, 2]));
        assert_ne!(a, uid(2, &[2, 3]));
        assert!(a.len() <= 64);
        assert!(a.starts_with("2.25."));
        assert!(!a[5..].starts_with('0'));
    }
}
