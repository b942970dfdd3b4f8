//! Security codes, and the randomness and hashing the machine borrows from the IO layer.
//!
//! The machine has no random source and no hash function of its own: it asks a [`Crypto`]
//! the IO layer supplies (a CSPRNG and a keyed SHA-256 with a constant-time comparison in
//! production, [`DangerDeterministicCrypto`] in tests). Codes are kept only as digests.

use std::fmt;

/// The code alphabet: digits and capital letters without the look-alikes `0`, `1`, `I`, `O`.
/// 32 symbols, so a random byte maps to one without bias (`byte % 32`), and 8 symbols carry
/// 40 bits.
pub const CODE_ALPHABET: &[u8; 32] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZ";
/// Symbols in a security code.
pub const CODE_LEN: usize = 8;

/// The digest of a normalised security code; the only form in which the machine keeps codes.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CodeDigest(pub [u8; 32]);

impl fmt::Debug for CodeDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print digests: with a 40-bit code space an unkeyed digest is a code.
        f.write_str("CodeDigest(..)")
    }
}

/// Randomness and code hashing, supplied by the IO layer.
pub trait Crypto {
    /// Fills `dest` with bytes from a cryptographically secure generator.
    fn fill_random(&mut self, dest: &mut [u8]);

    /// The digest of a normalised code (8 symbols of [`CODE_ALPHABET`]).
    ///
    /// Use a keyed hash (HMAC-SHA-256 with a secret per deployment): the code space is only
    /// 40 bits, so an unkeyed SHA-256 of a leaked live-state store could be inverted by brute
    /// force. Equal codes must give equal digests (the machine looks digests up).
    fn code_digest(&self, code: &str) -> CodeDigest;

    /// Compares two digests in constant time (e.g. `subtle::ConstantTimeEq`).
    fn digests_equal(&self, a: &CodeDigest, b: &CodeDigest) -> bool;
}

/// Turns 8 random bytes into a code (each byte picks one of the 32 symbols, unbiased).
pub fn code_from_bytes(bytes: [u8; CODE_LEN]) -> String {
    bytes
        .iter()
        .map(|b| char::from(CODE_ALPHABET[usize::from(b % 32)]))
        .collect()
}

/// Normalises a code as a person typed it: drops spaces and `-`, uppercases. Returns `None`
/// unless the result is exactly [`CODE_LEN`] symbols of [`CODE_ALPHABET`].
pub fn normalize_code(typed: &str) -> Option<String> {
    if typed.len() > 4 * CODE_LEN {
        return None;
    }
    let code: String = typed
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let valid = code.len() == CODE_LEN && code.bytes().all(|b| CODE_ALPHABET.contains(&b));
    valid.then_some(code)
}

/// A deterministic, **insecure** [`Crypto`] for tests and simulations: a seeded xorshift
/// generator and a non-cryptographic (FNV-1a based) digest. Never use it in a server.
#[derive(Debug, Clone)]
pub struct DangerDeterministicCrypto {
    state: u64,
}

impl DangerDeterministicCrypto {
    /// A generator seeded with `seed` (any value; zero is remapped).
    pub fn new(seed: u64) -> Self {
        DangerDeterministicCrypto {
            state: seed ^ 0x9E37_79B9_7F4A_7C15 | 1,
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Crypto for DangerDeterministicCrypto {
    fn fill_random(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    fn code_digest(&self, code: &str) -> CodeDigest {
        let mut out = [0u8; 32];
        for (lane, part) in out.chunks_mut(8).enumerate() {
            let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ lane as u64;
            for b in code.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01B3);
            }
            part.copy_from_slice(&h.to_le_bytes());
        }
        CodeDigest(out)
    }

    fn digests_equal(&self, a: &CodeDigest, b: &CodeDigest) -> bool {
        a.0.iter()
            .zip(b.0.iter())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_has_no_look_alikes_and_32_distinct_symbols() {
        for bad in [b'0', b'1', b'I', b'O'] {
            assert!(!CODE_ALPHABET.contains(&bad));
        }
        let mut sorted = CODE_ALPHABET.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 32);
    }

    #[test]
    fn normalisation_accepts_typing_variants_only() {
        assert_eq!(normalize_code("abcd-efgh").as_deref(), Some("ABCDEFGH"));
        assert_eq!(normalize_code(" 2345 6789 ").as_deref(), Some("23456789"));
        assert_eq!(normalize_code("ABCDEFG"), None);
        assert_eq!(normalize_code("ABCDEFGHJ"), None);
        assert_eq!(normalize_code("ABCDEFG0"), None);
        assert_eq!(normalize_code("ÄBCDEFGH"), None);
        assert_eq!(normalize_code(&"A".repeat(1000)), None);
    }

    #[test]
    fn codes_from_bytes_are_valid() {
        let code = code_from_bytes([0, 31, 32, 255, 7, 100, 200, 64]);
        assert_eq!(normalize_code(&code).as_deref(), Some(code.as_str()));
    }
}
