//! Kafka's default partitioner for keyed records: the positive murmur2 hash
//! of the key, modulo the partition count. Java's producer does this, and
//! librdkafka's `murmur2_random` partitioner does it for keyed records, so
//! a key lands on the same partition whoever sends it.

/// Kafka's 32-bit murmur2 of `key` (seed `0x9747b28c`), as Java's
/// `Utils.murmur2` computes it.
///
/// ```
/// use kafka_trace_harness::traced::partitioner::murmur2;
///
/// assert_eq!(murmur2(b"21"), -973932308);
/// ```
pub fn murmur2(key: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    // The tail's bytes fold in from the last one down, as in Java's switch.
    if tail.len() == 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner gives `key` among
/// `partitions` (at least 1): `(murmur2(key) & 0x7fffffff) % partitions`.
///
/// ```
/// use kafka_trace_harness::traced::partitioner::partition_for_key;
///
/// let p = partition_for_key(b"ZVZZT", 3);
/// assert!((0..3).contains(&p));
/// assert_eq!(p, partition_for_key(b"ZVZZT", 3));
/// ```
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    let positive = murmur2(key) & 0x7fff_ffff;
    positive % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_java_client() {
        // Values of the Java client's own murmur2 test.
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, want) in cases {
            assert_eq!(murmur2(key), want, "{:?}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partitions_are_in_range_and_positive() {
        for n in 0..1_000 {
            let key = format!("key-{n}");
            let p = partition_for_key(key.as_bytes(), 7);
            assert!((0..7).contains(&p));
        }
        assert_eq!(
            partition_for_key(b"abc", 0),
            0,
            "no partitions counts as one"
        );
    }
}
