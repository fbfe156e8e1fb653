//! Server-made identities and stamps: object uids, `generateName` suffixes, tokens and
//! `creationTimestamp`s, without pulling in a random or date crate for a test server.

/// A random version-4 UUID string.
pub fn new_uid() -> String {
    let mut b = random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex = hex::encode(&b);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Random bytes from the kernel; a hash of the time and a counter if that is unavailable,
/// which is good enough for names and uids in tests.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut buf = vec![0u8; n];
    let from_kernel = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf));
    if from_kernel.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for (i, byte) in buf.iter_mut().enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            *byte = h.finish() as u8;
        }
    }
    buf
}
