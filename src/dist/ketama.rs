//! Ketama consistent hashing (`nc_ketama.c`): md5 points on a u32 ring, weighted with
//! twemproxy's float32 arithmetic.

use super::WeightedServer;
use crate::hash::md5::{digest_word, md5_digest};

/// Points per server when all weights are equal (`KETAMA_POINTS_PER_SERVER`).
const POINTS_PER_SERVER: f32 = 160.0;
/// Each md5 digest yields this many points.
const POINTS_PER_DIGEST: u32 = 4;
/// twemproxy formats the point label into a 273-byte buffer, so at most 272 bytes survive.
const MAX_LABEL_LEN: usize = 272;

/// One point on the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Point {
    pub(super) value: u32,
    /// Index into the slice the continuum was built from.
    pub(super) server: usize,
}

/// How many points a live server gets, computed exactly as twemproxy does.
///
/// `pct * 160 / 4 * nlive` is float32 arithmetic in that order; the C code then adds a
/// double `1e-10`, converts back to float and floors. The epsilon is usually lost in the
/// conversion back to f32, which is exactly what we must reproduce.
pub(super) fn points_per_server(weight: u32, total_weight: u64, live_count: u32) -> u32 {
    let share = weight as f32 / total_weight as f32;
    let quarter_points = share * POINTS_PER_SERVER / POINTS_PER_DIGEST as f32 * live_count as f32;
    let nudged = (f64::from(quarter_points) + 1e-10) as f32;
    // `as u32` saturates (NaN becomes 0), so a zero total weight cannot panic.
    (nudged.floor() * POINTS_PER_DIGEST as f32) as u32
}

/// The four ring values twemproxy derives from `"<name>-<index>"`.
pub(super) fn point_values(name: &str, index: u32) -> [u32; 4] {
    let label = format!("{name}-{index}");
    let label = &label.as_bytes()[..label.len().min(MAX_LABEL_LEN)];
    let digest = md5_digest(label);
    [0, 1, 2, 3].map(|alignment| digest_word(&digest, alignment))
}

/// Builds the sorted ring from the live servers of `servers`.
pub(super) fn build(servers: &[WeightedServer<'_>]) -> Vec<Point> {
    let live = || servers.iter().enumerate().filter(|(_, server)| server.live);
    let live_count = live().count() as u32;
    // twemproxy sums in a u32; summing in u64 differs only where that sum would overflow,
    // and it keeps every share <= 1, so the ring can never exceed 160 points per server.
    let total_weight: u64 = live().map(|(_, server)| u64::from(server.weight)).sum();

    let mut points = Vec::new();
    for (server_index, server) in live() {
        let digests =
            points_per_server(server.weight, total_weight, live_count) / POINTS_PER_DIGEST;
        for point_index in 0..digests {
            points.extend(point_values(server.name, point_index).map(|value| Point {
                value,
                server: server_index,
            }));
        }
    }
    // Stable, so equal values keep insertion order (glibc's merge-sort qsort does the same).
    points.sort_by_key(|point| point.value);
    points
}

/// The first point at or after `hash`, wrapping to the first point of the ring.
pub(super) fn pick(points: &[Point], hash: u32) -> Option<usize> {
    let first_not_below = points.partition_point(|point| point.value < hash);
    points
        .get(first_not_below)
        .or_else(|| points.first())
        .map(|point| point.server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(name: &str, weight: u32) -> WeightedServer<'_> {
        WeightedServer {
            name,
            weight,
            live: true,
        }
    }

    #[test]
    fn points_per_server_for_the_documented_weights() {
        assert_eq!(points_per_server(2, 7, 4), 180);
        assert_eq!(points_per_server(3, 7, 4), 272);
        assert_eq!(points_per_server(1, 7, 4), 88);
        assert_eq!(points_per_server(1, 1, 1), 160);
    }

    #[test]
    fn points_per_server_uses_float32_rounding() {
        // Exact arithmetic gives 1/25*40*25 = 40 -> 160, but in float32 the product is
        // 39.99999..., and the double 1e-10 nudge is lost when converted back to float.
        assert_eq!(points_per_server(1, 25, 25), 156);
        assert_eq!(points_per_server(1, 24, 24), 160);
        // Exact: floor(29/30*40*3) = 116 -> 464.
        assert_eq!(points_per_server(29, 30, 3), 460);
    }

    #[test]
    fn points_per_server_never_panics_on_degenerate_weights() {
        assert_eq!(points_per_server(0, 0, 1), 0);
        assert_eq!(points_per_server(0, 5, 2), 0);
        assert_eq!(points_per_server(u32::MAX, u64::from(u32::MAX), 1), 160);
    }

    #[test]
    fn point_values_are_the_md5_words_of_the_label() {
        // From tests/data/hash-vectors.tsv (ketama_hash lines, key "server1-8").
        assert_eq!(
            point_values("server1", 8),
            [3_853_726_576, 1_491_449_930, 639_619_849, 2_667_054_752]
        );
    }

    #[test]
    fn long_labels_are_truncated_to_272_bytes() {
        let name = "n".repeat(300);
        let truncated = &name.as_bytes()[..MAX_LABEL_LEN];
        let digest = md5_digest(truncated);
        assert_eq!(point_values(&name, 7)[0], digest_word(&digest, 0));
        // 270 bytes + "-12" is 273 bytes: the last digit is cut off, so index 12 and 1 collide.
        let name = "n".repeat(270);
        assert_eq!(point_values(&name, 12), point_values(&name, 1));
        assert_ne!(point_values(&name, 1), point_values(&name, 2));
    }

    #[test]
    fn huge_weights_stay_bounded() {
        let servers = [live("a", u32::MAX), live("b", u32::MAX)];
        let points = build(&servers);
        assert_eq!(points.len(), 320);
    }

    #[test]
    fn ring_is_sorted_and_tagged_with_original_indices() {
        let servers = [
            live("a", 1),
            WeightedServer {
                name: "b",
                weight: 1,
                live: false,
            },
            live("c", 1),
        ];
        let points = build(&servers);
        assert_eq!(points.len(), 320);
        assert!(points.windows(2).all(|pair| pair[0].value <= pair[1].value));
        assert!(points
            .iter()
            .all(|point| point.server == 0 || point.server == 2));
        assert_eq!(points.iter().filter(|point| point.server == 2).count(), 160);
    }

    #[test]
    fn pick_finds_the_first_point_at_or_after_the_hash() {
        let points = [
            Point {
                value: 10,
                server: 3,
            },
            Point {
                value: 20,
                server: 1,
            },
            Point {
                value: 20,
                server: 2,
            },
            Point {
                value: 30,
                server: 0,
            },
        ];
        assert_eq!(pick(&points, 0), Some(3));
        assert_eq!(pick(&points, 10), Some(3));
        assert_eq!(pick(&points, 11), Some(1));
        // Ties: the first of the equal points wins.
        assert_eq!(pick(&points, 20), Some(1));
        assert_eq!(pick(&points, 30), Some(0));
        // Past the last point the ring wraps to the first.
        assert_eq!(pick(&points, 31), Some(3));
        assert_eq!(pick(&points, u32::MAX), Some(3));
        assert_eq!(pick(&[], 5), None);
    }

    #[test]
    fn equal_values_keep_insertion_order() {
        // Two servers with the same name produce identical points; the stable sort
        // must keep the earlier server first for every value.
        let servers = [live("twin", 1), live("twin", 1)];
        let points = build(&servers);
        assert_eq!(points.len(), 320);
        for pair in points.chunks_exact(2) {
            assert_eq!(pair[0].value, pair[1].value);
            assert_eq!((pair[0].server, pair[1].server), (0, 1));
        }
    }
}
