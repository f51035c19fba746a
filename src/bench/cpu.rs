//! Server CPU summed over every process that serves a target: its confab nodes, and for a
//! PostgreSQL store or a NATS bus the bench started, those servers too — PostgreSQL's postmaster
//! with all of its children (one backend per connection, the checkpointer, the WAL writer, …).
//!
//! A part the bench did not start is *missing*, not zero: its CPU is unknown, and so is the
//! total. Children of the postmaster that exit during a measurement are not lost: the kernel
//! adds their time to the postmaster's `cutime`/`cstime` when it reaps them.

use serde::Serialize;

use super::proc;

/// Where a part's CPU comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The target does not use it (a node on SQLite has no PostgreSQL).
    Unused,
    /// It is used, but the bench did not start it and knows no process.
    Unknown,
    /// The process the bench started (PostgreSQL: the postmaster).
    Pid(u32),
}

/// The processes of one target.
#[derive(Debug, Clone)]
pub(crate) struct Processes {
    /// The confab nodes; empty when they were not started by the bench.
    pub(crate) nodes: Vec<u32>,
    pub(crate) postgres: Part,
    pub(crate) nats: Part,
}

impl Processes {
    /// One server process, or nothing known.
    pub(crate) fn single(pid: Option<u32>) -> Processes {
        Processes {
            nodes: pid.into_iter().collect(),
            postgres: Part::Unused,
            nats: Part::Unused,
        }
    }

    /// The CPU ticks used so far by each part; `None` when no node is known or one has gone.
    pub(crate) fn sample(&self) -> Option<Ticks> {
        if self.nodes.is_empty() {
            return None;
        }
        let mut nodes = 0;
        for &pid in &self.nodes {
            nodes += proc::sample(pid).ok()?.cpu_ticks;
        }
        let part = |part: Part, tree: bool| match part {
            Part::Pid(pid) if tree => proc::tree_cpu_ticks(pid).ok().map(Some),
            Part::Pid(pid) => proc::sample(pid).ok().map(|s| Some(s.cpu_ticks)),
            Part::Unused | Part::Unknown => Some(None),
        };
        Some(Ticks {
            nodes,
            postgres: part(self.postgres, true)?,
            nats: part(self.nats, false)?,
            missing: [("PostgreSQL", self.postgres), ("NATS", self.nats)]
                .into_iter()
                .filter(|(_, p)| *p == Part::Unknown)
                .map(|(name, _)| name)
                .collect(),
        })
    }
}

/// CPU ticks used by each part of a target up to one moment.
#[derive(Debug, Clone)]
pub(crate) struct Ticks {
    nodes: u64,
    postgres: Option<u64>,
    nats: Option<u64>,
    missing: Vec<&'static str>,
}

/// Server CPU per message, in microseconds, by part.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PerMessage {
    /// Every confab node together.
    pub(crate) nodes_us: f64,
    /// PostgreSQL (postmaster and children), when the target uses it and the bench started it.
    pub(crate) postgres_us: Option<f64>,
    pub(crate) nats_us: Option<f64>,
    /// The sum; `None` when a part is missing.
    pub(crate) total_us: Option<f64>,
    /// Parts in use whose CPU is unknown (servers the bench did not start).
    pub(crate) missing: Vec<&'static str>,
}

/// CPU per message between two samples; `None` without both samples or without messages.
pub(crate) fn per_message(
    before: Option<&Ticks>,
    after: Option<&Ticks>,
    messages: u64,
) -> Option<PerMessage> {
    let (b, a) = (before?, after?);
    if messages == 0 {
        return None;
    }
    let us = |ticks: u64| ticks as f64 * 1e6 / proc::clk_tck() as f64 / messages as f64;
    let part = |b: Option<u64>, a: Option<u64>| Some(us(a?.saturating_sub(b?)));
    let nodes_us = us(a.nodes.saturating_sub(b.nodes));
    let (postgres_us, nats_us) = (part(b.postgres, a.postgres), part(b.nats, a.nats));
    let total_us = a
        .missing
        .is_empty()
        .then(|| nodes_us + postgres_us.unwrap_or(0.0) + nats_us.unwrap_or(0.0));
    Some(PerMessage {
        nodes_us,
        postgres_us,
        nats_us,
        total_us,
        missing: a.missing.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticks(nodes: u64, postgres: Option<u64>, missing: Vec<&'static str>) -> Ticks {
        Ticks {
            nodes,
            postgres,
            nats: None,
            missing,
        }
    }

    #[test]
    fn parts_are_summed_only_when_none_is_missing() {
        let tck = proc::clk_tck() as f64;
        let (b, a) = (ticks(100, Some(10), vec![]), ticks(300, Some(60), vec![]));
        let m = per_message(Some(&b), Some(&a), 1000).unwrap();
        let us = |t: f64| t * 1e6 / tck / 1000.0;
        assert_eq!(m.nodes_us, us(200.0));
        assert_eq!(m.postgres_us, Some(us(50.0)));
        assert_eq!(m.nats_us, None);
        assert_eq!(m.total_us, Some(us(250.0)));

        let (b, a) = (ticks(0, None, vec!["NATS"]), ticks(100, None, vec!["NATS"]));
        let m = per_message(Some(&b), Some(&a), 10).unwrap();
        assert_eq!(m.total_us, None);
        assert_eq!(m.missing, ["NATS"]);
        assert!(per_message(Some(&b), Some(&a), 0).is_none());
        assert!(per_message(None, Some(&a), 10).is_none());
    }

    #[test]
    fn this_process_is_a_node_and_a_tree() {
        let me = std::process::id();
        let p = Processes {
            nodes: vec![me],
            postgres: Part::Pid(me),
            nats: Part::Unknown,
        };
        let t = p.sample().unwrap();
        assert!(t.postgres.is_some());
        assert_eq!(t.missing, ["NATS"]);
        assert!(Processes::single(None).sample().is_none());
    }
}
