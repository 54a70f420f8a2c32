//! Key to partition mapping.
//!
//! Guarantee: the mapping depends only on the key bytes and the partition count, never on the
//! process, the platform or the Rust version (std's `DefaultHasher` is randomized per process and
//! may change between releases, so it is not used). It is 64-bit FNV-1a, reduced modulo the
//! partition count.

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Returns the 64-bit FNV-1a hash of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Returns the partition of `key` among `partitions` partitions.
pub fn partition_for_key(key: &str, partitions: u32) -> u32 {
    debug_assert!(partitions > 0, "a log has at least one partition");
    let partition = fnv1a64(key.as_bytes()) % u64::from(partitions.max(1));
    // The remainder is below `partitions`, which is a u32.
    u32::try_from(partition).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_fnv1a64_matches_reference_vectors() {
        // Reference values from the FNV specification's test suite.
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn test_partition_for_key_is_stable_and_in_range() {
        assert_eq!(partition_for_key("anything", 1), 0);
        assert_eq!(
            partition_for_key("a", 4),
            u32::try_from(0xaf63_dc4c_8601_ec8c_u64 % 4).unwrap()
        );
        let mut used = [false; 8];
        for index in 0..200 {
            let key = format!("call-{index}");
            let partition = partition_for_key(&key, 8);
            assert!(partition < 8);
            assert_eq!(partition, partition_for_key(&key, 8));
            used[partition as usize] = true;
        }
        assert!(
            used.iter().all(|was_used| *was_used),
            "200 keys should reach all 8 partitions"
        );
    }
}
