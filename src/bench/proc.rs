//! What the kernel says about a process: resident memory (`VmRSS` in /proc/PID/status) and CPU
//! time (`utime + stime` in /proc/PID/stat, in clock ticks); and the bench's own limit on open
//! files, which 10 000 connections exceed by default.
//!
//! Linux only, like the figures it serves. The parsers are pure so they are tested on fixed text.

use anyhow::{Context, bail};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Ticks per second of /proc/PID/stat's CPU times: `sysconf(_SC_CLK_TCK)`, or 100 (what Linux
/// uses on every mainstream architecture) if that fails.
pub(crate) fn clk_tck() -> u64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// One reading of a process.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sample {
    /// Resident set size, KiB.
    pub(crate) rss_kib: u64,
    /// User plus system CPU time, clock ticks.
    pub(crate) cpu_ticks: u64,
}

/// Reads `pid`'s memory and CPU time.
///
/// # Errors
/// The process is gone or /proc is not Linux's.
pub(crate) fn sample(pid: u32) -> anyhow::Result<Sample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is process {pid} running?)"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    Ok(Sample {
        rss_kib: vm_rss_kib(&status).context("no VmRSS line in /proc/PID/status")?,
        cpu_ticks: cpu_ticks(&stat).context("malformed /proc/PID/stat")?,
    })
}

/// `VmRSS` in KiB from the text of /proc/PID/status.
fn vm_rss_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut fields = line["VmRSS:".len()..].split_whitespace();
    let value: u64 = fields.next()?.parse().ok()?;
    match fields.next() {
        Some("kB") | None => Some(value),
        Some(_) => None,
    }
}

/// `utime + stime` (fields 14 and 15) from the text of /proc/PID/stat.
fn cpu_ticks(stat: &str) -> Option<u64> {
    stat_fields(stat).map(|f| f.utime + f.stime)
}

/// The fields of /proc/PID/stat the CPU figures need.
struct StatFields {
    ppid: u32,
    utime: u64,
    stime: u64,
    /// Time of children that exited and were waited for.
    cutime: u64,
    cstime: u64,
}

fn stat_fields(stat: &str) -> Option<StatFields> {
    // Field 2, the command name, is in parentheses and may itself hold spaces and parentheses:
    // count fields from the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is fields[n - 3].
    let field = |n: usize| fields.get(n - 3)?.parse().ok();
    Some(StatFields {
        ppid: u32::try_from(field(4)?).ok()?,
        utime: field(14)?,
        stime: field(15)?,
        cutime: field(16)?,
        cstime: field(17)?,
    })
}

/// CPU ticks of `pid` and its children, those alive now and those it has reaped: how a server
/// made of a parent and its worker processes (PostgreSQL) is weighed.
///
/// # Errors
/// `pid` is gone or /proc is not Linux's.
pub(crate) fn tree_cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let read = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| stat_fields(&s))
    };
    let own = read(pid).with_context(|| format!("reading /proc/{pid}/stat"))?;
    let mut ticks = own.utime + own.stime + own.cutime + own.cstime;
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Some(child) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        // A child that exits between the listing and the read is counted by its parent's
        // cutime/cstime instead, once reaped.
        if let Some(f) = read(child).filter(|f| f.ppid == pid) {
            ticks += f.utime + f.stime + f.cutime + f.cstime;
        }
    }
    Ok(ticks)
}

/// Raises the soft limit on open files to the hard limit when it is below `needed`; returns the
/// soft limit in force afterwards. Children (a spawned server) inherit it.
///
/// # Errors
/// The limits cannot be read or set.
pub(crate) fn raise_fd_limit(needed: u64) -> anyhow::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).context("reading RLIMIT_NOFILE")?;
    if soft >= needed {
        return Ok(soft);
    }
    if hard < needed {
        bail!(
            "{needed} open files are needed but the hard limit is {hard}; raise it (ulimit -Hn) \
             or use fewer --users (phase 8 after phase 1 holds twice --users connections)"
        );
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("raising RLIMIT_NOFILE")?;
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_comes_from_the_vmrss_line() {
        let status = "Name:\tconfab\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        assert_eq!(vm_rss_kib("VmRSS:\t 5 MB\n"), None);
    }

    #[test]
    fn cpu_time_skips_a_command_name_with_spaces_and_parentheses() {
        // Fields 14 and 15 are 700 and 55.
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 700 55 0 0 20 0 \
                    3 0 12345 1000000 250 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(755));
        assert_eq!(cpu_ticks("4242 (x) S 1"), None);
        let f = stat_fields(stat).unwrap();
        assert_eq!((f.ppid, f.cutime, f.cstime), (1, 0, 0));
    }

    #[test]
    fn a_tree_counts_a_child_that_is_still_running() {
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; sleep 30",
            ])
            .spawn()
            .unwrap();
        // The child's loop burns some CPU before it sleeps; wait until it has some.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut child_ticks = 0;
        while child_ticks == 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            child_ticks = sample(child.id()).map_or(0, |s| s.cpu_ticks);
        }
        // Every figure only grows, so the tree read last holds at least both read before it.
        let own = sample(std::process::id()).unwrap().cpu_ticks;
        let tree = tree_cpu_ticks(std::process::id()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(child_ticks > 0, "the child used no CPU");
        assert!(
            tree >= own + child_ticks,
            "the child's CPU was not counted: {tree} < {own} + {child_ticks}"
        );
        assert!(tree_cpu_ticks(u32::MAX).is_err());
    }

    #[test]
    fn this_process_can_be_sampled() {
        let s = sample(std::process::id()).unwrap();
        assert!(s.rss_kib > 0);
        assert!(clk_tck() > 0);
    }
}
