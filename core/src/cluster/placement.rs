//! Which shard a file is in, and which member should own a shard: pure,
//! stable functions every member (and every version) computes alike
//! (docs/CLUSTER.md, "Shards and placement").

use std::fmt;

/// A shard of the namespace, `0..shards`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShardId(pub u32);

impl fmt::Display for ShardId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:05}", self.0)
    }
}

/// 64-bit FNV-1a: fixed by the protocol of the cluster, never `std`'s hasher
/// (which may change between Rust versions).
pub fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in *part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}

/// The shard of a file, by its normalized relative path.
pub fn shard_of(path: &str, shards: u32) -> ShardId {
    ShardId((fnv1a64(&[path.as_bytes()]) % u64::from(shards.max(1))) as u32)
}

/// MurmurHash3's 64-bit finalizer: FNV-1a alone barely mixes its last
/// bytes into the high bits, which rendezvous scores compare.
pub fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// The member that should own `shard`: the highest rendezvous score
/// `fmix64(fnv1a64(id ‖ 0 ‖ shard as u32 big-endian))`, ties to the smaller id.
pub fn desired_owner<'a>(
    members: impl IntoIterator<Item = &'a str>,
    shard: ShardId,
) -> Option<&'a str> {
    let s = shard.0.to_be_bytes();
    members
        .into_iter()
        .map(|id| (fmix64(fnv1a64(&[id.as_bytes(), &[0], &s])), id))
        .max_by(|(ha, a), (hb, b)| ha.cmp(hb).then_with(|| b.cmp(a)))
        .map(|(_, id)| id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(&[b""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(&[b"a"]), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(&[b"foobar"]), 0x8594_4171_f739_67e8);
        assert_eq!(fnv1a64(&[b"foo", b"bar"]), fnv1a64(&[b"foobar"]));
    }

    #[test]
    fn a_join_moves_only_the_shards_the_newcomer_wins() {
        let before = ["a", "b", "c"];
        let after = ["a", "b", "c", "d"];
        let (mut moved, n) = (0, 1000);
        for s in 0..n {
            let (x, y) = (
                desired_owner(before, ShardId(s)).unwrap(),
                desired_owner(after, ShardId(s)).unwrap(),
            );
            if x != y {
                assert_eq!(y, "d", "shard {s} moved between old members");
                moved += 1;
            }
        }
        // About a quarter of the shards, and never between old members.
        assert!((150..350).contains(&moved), "{moved} of {n} moved");
    }

    #[test]
    fn paths_spread_over_the_shards() {
        let mut count = [0u32; 8];
        for i in 0..8000 {
            count[shard_of(&format!("dir/file-{i}.bin"), 8).0 as usize] += 1;
        }
        assert!(count.iter().all(|&c| (800..1200).contains(&c)), "{count:?}");
    }
}
