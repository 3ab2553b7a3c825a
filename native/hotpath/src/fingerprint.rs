//! 128-bit fingerprints (XXH3-128) of identities, each kind in its own seed domain. One
//! definition for the kernel and the prototype: a persisted key must be computed one way.

use xxhash_rust::xxh3::xxh3_128_with_seed;

#[inline]
pub fn fp(bytes: &[u8], seed: u64) -> u128 {
    xxh3_128_with_seed(bytes, seed)
}

/// The fingerprint of up to four fingerprints laid side by side, then up to three small
/// integers as 8-byte words.
#[inline]
pub fn fp_of(parts: &[u128], extra: &[u64], seed: u64) -> u128 {
    let mut buf = [0u8; 16 * 4 + 8 * 3];
    let mut n = 0;
    for p in parts {
        buf[n..n + 16].copy_from_slice(&p.to_le_bytes());
        n += 16;
    }
    for e in extra {
        buf[n..n + 8].copy_from_slice(&e.to_le_bytes());
        n += 8;
    }
    fp(&buf[..n], seed)
}
