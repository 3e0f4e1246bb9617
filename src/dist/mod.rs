//! Key distribution: ketama, modula and random, as in twemproxy's `hashkit/`.
//!
//! A [`Continuum`] is built once from the live servers and is immutable afterwards;
//! ejection or reload builds a new one.

mod ketama;
mod modula;
mod random;

use std::fmt;

/// One of twemproxy's `distribution:` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DistributionKind {
    Ketama,
    Modula,
    Random,
}

impl DistributionKind {
    /// Every distribution, in twemproxy's table order.
    pub const ALL: [DistributionKind; 3] = [
        DistributionKind::Ketama,
        DistributionKind::Modula,
        DistributionKind::Random,
    ];

    /// The config name (`distribution: ketama`).
    pub fn name(self) -> &'static str {
        match self {
            DistributionKind::Ketama => "ketama",
            DistributionKind::Modula => "modula",
            DistributionKind::Random => "random",
        }
    }

    /// Parses a config name; exact, case-sensitive match.
    pub fn from_name(name: &str) -> Option<DistributionKind> {
        DistributionKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
    }
}

/// What the distribution needs to know about one server, in the pool's sorted order.
#[derive(Clone, Copy, Debug)]
pub struct WeightedServer<'a> {
    /// The server's twemproxy name (ketama points hash `"<name>-<i>"`).
    pub name: &'a str,
    pub weight: u32,
    /// False when the server is ejected.
    pub live: bool,
}

/// An immutable lookup structure from a key hash to a server index.
///
/// Server indices always refer to the slice given to [`Continuum::build`], so ejected
/// servers keep their place and are simply never returned.
#[derive(Clone)]
pub struct Continuum {
    layout: Layout,
}

#[derive(Clone)]
enum Layout {
    /// Ring points sorted by value.
    Ketama(Vec<ketama::Point>),
    /// Slot runs by cumulative live weight.
    Modula(Vec<modula::Run>),
    /// The indices of the live servers.
    Random(Vec<usize>),
}

impl Continuum {
    /// Builds the lookup structure over the live servers of `servers`; never panics,
    /// even for an empty slice or zero weights.
    pub fn build(kind: DistributionKind, servers: &[WeightedServer<'_>]) -> Continuum {
        let layout = match kind {
            DistributionKind::Ketama => Layout::Ketama(ketama::build(servers)),
            DistributionKind::Modula => Layout::Modula(modula::build(servers)),
            DistributionKind::Random => Layout::Random(
                servers
                    .iter()
                    .enumerate()
                    .filter(|(_, server)| server.live)
                    .map(|(index, _)| index)
                    .collect(),
            ),
        };
        Continuum { layout }
    }

    /// The server index for a key hash, or `None` when no server is live.
    pub fn pick(&self, hash: u32) -> Option<usize> {
        match &self.layout {
            Layout::Ketama(points) => ketama::pick(points, hash),
            Layout::Modula(runs) => modula::pick(runs, hash),
            Layout::Random(slots) => random::pick(slots),
        }
    }

    /// The distribution this continuum was built for.
    pub fn kind(&self) -> DistributionKind {
        match self.layout {
            Layout::Ketama(_) => DistributionKind::Ketama,
            Layout::Modula(_) => DistributionKind::Modula,
            Layout::Random(_) => DistributionKind::Random,
        }
    }

    /// twemproxy's `ncontinuum`: ketama points, modula weight slots, or random slots.
    pub fn len(&self) -> usize {
        match &self.layout {
            Layout::Ketama(points) => points.len(),
            Layout::Modula(runs) => usize::try_from(modula::slot_count(runs)).unwrap_or(usize::MAX),
            Layout::Random(slots) => slots.len(),
        }
    }

    /// True when no server can be picked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many points (ketama) or slots (modula, random) belong to `server`.
    pub fn points_of(&self, server: usize) -> usize {
        match &self.layout {
            Layout::Ketama(points) => points.iter().filter(|point| point.server == server).count(),
            Layout::Modula(runs) => {
                let mut start = 0;
                let mut slots = 0;
                for run in runs {
                    if run.server == server {
                        slots += run.end - start;
                    }
                    start = run.end;
                }
                usize::try_from(slots).unwrap_or(usize::MAX)
            }
            Layout::Random(slots) => slots.iter().filter(|&&index| index == server).count(),
        }
    }
}

/// A summary only: a ketama ring holds 160 points per server, too many to log.
impl fmt::Debug for Continuum {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("Continuum")
            .field("kind", &self.kind())
            .field("len", &self.len())
            .finish()
    }
}

/// The four ketama ring values twemproxy derives from the label `"<name>-<index>"`:
/// the md5 digest of the label read as four little-endian u32 words.
pub fn ketama_point_values(name: &str, index: u32) -> [u32; 4] {
    ketama::point_values(name, index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str, weight: u32, live: bool) -> WeightedServer<'_> {
        WeightedServer { name, weight, live }
    }

    #[test]
    fn continuum_can_be_shared_across_threads() {
        fn assert_shareable<T: Clone + fmt::Debug + Send + Sync + 'static>() {}
        assert_shareable::<Continuum>();
    }

    #[test]
    fn names_round_trip() {
        for kind in DistributionKind::ALL {
            assert_eq!(DistributionKind::from_name(kind.name()), Some(kind));
        }
        for name in ["Ketama", "modulo", "", "random "] {
            assert_eq!(DistributionKind::from_name(name), None, "{name:?}");
        }
    }

    #[test]
    fn ketama_weights_2_3_1_1() {
        let servers = [
            server("s1", 2, true),
            server("s2", 3, true),
            server("s3", 1, true),
            server("s4", 1, true),
        ];
        let continuum = Continuum::build(DistributionKind::Ketama, &servers);
        let points: Vec<_> = (0..4).map(|index| continuum.points_of(index)).collect();
        assert_eq!(points, [180, 272, 88, 88]);
        assert_eq!(continuum.len(), 628);
        assert_eq!(continuum.kind(), DistributionKind::Ketama);
    }

    #[test]
    fn ketama_ejected_servers_are_skipped_and_never_picked() {
        let servers = [
            server("a", 1, true),
            server("b", 1, false),
            server("c", 1, true),
        ];
        let continuum = Continuum::build(DistributionKind::Ketama, &servers);
        assert_eq!(
            (0..3)
                .map(|index| continuum.points_of(index))
                .collect::<Vec<_>>(),
            [160, 0, 160]
        );
        // Every ring point, one past it, and both ends of the hash space.
        let Layout::Ketama(points) = &continuum.layout else {
            panic!("not ketama");
        };
        let probes = points
            .iter()
            .flat_map(|point| [point.value, point.value.wrapping_add(1)])
            .chain([0, u32::MAX]);
        for hash in probes {
            let picked = continuum.pick(hash);
            assert!(matches!(picked, Some(0) | Some(2)), "{hash}: {picked:?}");
        }
    }

    #[test]
    fn ketama_wraps_past_the_last_point() {
        let servers = [server("a", 1, true), server("b", 1, true)];
        let continuum = Continuum::build(DistributionKind::Ketama, &servers);
        let Layout::Ketama(points) = &continuum.layout else {
            panic!("not ketama");
        };
        let (first, last) = (points[0], points[points.len() - 1]);
        assert!(last.value < u32::MAX);
        assert_eq!(continuum.pick(last.value), Some(last.server));
        assert_eq!(continuum.pick(last.value + 1), Some(first.server));
        assert_eq!(continuum.pick(u32::MAX), Some(first.server));
        assert_eq!(continuum.pick(0), Some(first.server));
    }

    #[test]
    fn modula_maps_hash_mod_total_weight() {
        let servers = [server("a", 1, true), server("b", 2, true)];
        let continuum = Continuum::build(DistributionKind::Modula, &servers);
        let picks: Vec<_> = (0..3).map(|hash| continuum.pick(hash)).collect();
        assert_eq!(picks, [Some(0), Some(1), Some(1)]);
        assert_eq!(continuum.len(), 3);
        assert_eq!((continuum.points_of(0), continuum.points_of(1)), (1, 2));
    }

    #[test]
    fn random_has_one_slot_per_live_server() {
        let servers = [
            server("a", 5, true),
            server("b", 1, false),
            server("c", 9, true),
        ];
        let continuum = Continuum::build(DistributionKind::Random, &servers);
        assert_eq!(continuum.len(), 2);
        assert_eq!(
            (0..3)
                .map(|index| continuum.points_of(index))
                .collect::<Vec<_>>(),
            [1, 0, 1]
        );
        for _ in 0..200 {
            assert!(matches!(continuum.pick(0), Some(0) | Some(2)));
        }
    }

    #[test]
    fn nothing_live_means_no_pick() {
        let ejected = [server("a", 1, false), server("b", 2, false)];
        for kind in DistributionKind::ALL {
            for servers in [&[][..], &ejected[..]] {
                let continuum = Continuum::build(kind, servers);
                assert!(continuum.is_empty(), "{kind:?}");
                assert_eq!(continuum.pick(0), None, "{kind:?}");
                assert_eq!(continuum.pick(u32::MAX), None, "{kind:?}");
            }
        }
    }

    #[test]
    fn debug_is_a_summary() {
        let continuum = Continuum::build(DistributionKind::Ketama, &[server("a", 1, true)]);
        assert_eq!(
            format!("{continuum:?}"),
            "Continuum { kind: Ketama, len: 160 }"
        );
    }
}
