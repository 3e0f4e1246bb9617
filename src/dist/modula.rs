//! Modula distribution (`nc_modula.c`): `hash % total_live_weight` over weight-unit slots.
//!
//! twemproxy materialises one slot per weight unit. We store one run per live server
//! instead, so a large weight cannot cost a large allocation; the mapping is identical.

use super::WeightedServer;

/// A run of consecutive slots belonging to one server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Run {
    /// One past the last slot of this run (cumulative live weight so far).
    pub(super) end: u64,
    pub(super) server: usize,
}

pub(super) fn build(servers: &[WeightedServer<'_>]) -> Vec<Run> {
    let mut end = 0u64;
    servers
        .iter()
        .enumerate()
        .filter(|(_, server)| server.live && server.weight > 0)
        .map(|(server, weighted)| {
            end += u64::from(weighted.weight);
            Run { end, server }
        })
        .collect()
}

pub(super) fn slot_count(runs: &[Run]) -> u64 {
    runs.last().map_or(0, |run| run.end)
}

pub(super) fn pick(runs: &[Run], hash: u32) -> Option<usize> {
    let slots = slot_count(runs);
    if slots == 0 {
        return None;
    }
    let slot = u64::from(hash) % slots;
    let run = runs.partition_point(|run| run.end <= slot);
    runs.get(run).map(|run| run.server)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(weight: u32, live: bool) -> WeightedServer<'static> {
        WeightedServer {
            name: "s",
            weight,
            live,
        }
    }

    #[test]
    fn weights_become_consecutive_slots() {
        let runs = build(&[server(1, true), server(2, true)]);
        assert_eq!(slot_count(&runs), 3);
        let picks: Vec<_> = (0..6).map(|hash| pick(&runs, hash)).collect();
        assert_eq!(
            picks,
            [Some(0), Some(1), Some(1), Some(0), Some(1), Some(1)]
        );
        // 4294967295 = 3 * 1431655765, so the top hash lands on slot 0.
        assert_eq!(pick(&runs, u32::MAX), Some(0));
    }

    #[test]
    fn ejected_and_zero_weight_servers_get_no_slots() {
        let runs = build(&[
            server(1, true),
            server(2, false),
            server(0, true),
            server(3, true),
        ]);
        assert_eq!(slot_count(&runs), 4);
        let picks: Vec<_> = (0..4).map(|hash| pick(&runs, hash)).collect();
        assert_eq!(picks, [Some(0), Some(3), Some(3), Some(3)]);
    }

    #[test]
    fn no_slots_means_no_pick() {
        assert_eq!(pick(&build(&[]), 7), None);
        assert_eq!(pick(&build(&[server(3, false)]), 7), None);
        assert_eq!(pick(&build(&[server(0, true)]), 7), None);
    }

    #[test]
    fn huge_weights_need_no_huge_allocation() {
        let runs = build(&[server(u32::MAX, true), server(u32::MAX, true)]);
        assert_eq!(slot_count(&runs), 2 * u64::from(u32::MAX));
        assert_eq!(pick(&runs, u32::MAX), Some(1));
        assert_eq!(pick(&runs, u32::MAX - 1), Some(0));
    }
}
