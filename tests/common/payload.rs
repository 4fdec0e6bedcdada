//! Random data ([`Rng`], [`shuffle`]) and checking it ([`checksum`], [`assert_same_bytes`]).

/// xorshift64* — small, fast, deterministic.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from a seed (any value, zero included).
    pub(crate) fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// A generator seeded from a test-specific string.
    pub(crate) fn for_test(salt: &str) -> Rng {
        Rng::new(checksum(salt.as_bytes()))
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Fills a buffer.
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        let n = rest.len();
        rest.copy_from_slice(&last[..n]);
    }

    /// `n` random bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.fill(&mut v);
        v
    }
}

/// A 64-bit checksum (xxhash-style word mixing, then an avalanche), length included.
pub(crate) fn checksum(data: &[u8]) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    let mut h = P2 ^ (data.len() as u64).wrapping_mul(P1);
    let (words, rest) = data.as_chunks::<8>();
    for w in words {
        let w = u64::from_le_bytes(*w);
        h = (h ^ w.wrapping_mul(P2)).rotate_left(31).wrapping_mul(P1);
    }
    for &b in rest {
        h = (h ^ u64::from(b)).wrapping_mul(P1).rotate_left(11);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h
}

/// Asserts two byte strings are equal, naming their lengths, checksums and first differing
/// offset when they are not.
pub(crate) fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: got {} bytes (checksum {:#018x}), want {} bytes (checksum {:#018x}); first \
         difference at offset {first}",
        got.len(),
        checksum(got),
        want.len(),
        checksum(want)
    );
}

/// A seed for `salt` (what [`Rng::for_test`] uses), to print with failures.
pub(crate) fn seed_of(salt: &str) -> u64 {
    checksum(salt.as_bytes())
}

/// Fisher–Yates.
pub(crate) fn shuffle<T>(v: &mut [T], rng: &mut Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}
