//! What a process used, from `/proc`: CPU time (its own, the machine's) and
//! peak RSS. Every server is measured the same way, the bare endpoint too,
//! which is why it runs as a process of its own.

use std::time::Instant;

/// `USER_HZ`, the unit of `/proc/*/stat` times: 100 on every Linux platform
/// Rust supports.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU time so far, in clock ticks: the machine's busy time, the servers'
/// and this process's (the load client).
pub struct CpuSample {
    at: Instant,
    machine: Option<u64>,
    servers: Option<u64>,
    client: Option<u64>,
}

/// Where the CPU went between two samples.
#[derive(Clone, Copy)]
pub struct CpuUse {
    seconds: f64,
    /// Clock ticks of the servers, the load client and everything else on
    /// the machine (other processes disturb the figures).
    servers: u64,
    client: u64,
    other: u64,
}

impl CpuSample {
    pub fn take(servers: &[u32]) -> CpuSample {
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|stat| {
            // cpu user nice system idle iowait irq softirq steal ...
            let ticks: Vec<u64> =
                stat.lines().next()?.split_whitespace().skip(1).take(8).filter_map(|f| f.parse().ok()).collect();
            let idle = ticks.get(3)? + ticks.get(4)?;
            Some(ticks.iter().sum::<u64>().saturating_sub(idle))
        });
        let servers = servers.iter().map(|pid| process_ticks(&pid.to_string())).sum::<Option<u64>>();
        CpuSample { at: Instant::now(), machine, servers, client: process_ticks("self") }
    }

    pub fn since(&self, before: &CpuSample) -> Option<CpuUse> {
        let servers = self.servers?.saturating_sub(before.servers?);
        let client = self.client?.saturating_sub(before.client?);
        let machine = self.machine?.saturating_sub(before.machine?);
        Some(CpuUse {
            seconds: self.at.duration_since(before.at).as_secs_f64(),
            servers,
            client,
            other: machine.saturating_sub(servers + client),
        })
    }
}

impl CpuUse {
    /// CPUs the servers used on average (1.0 = one core busy throughout).
    pub fn server_cpus(&self) -> f64 {
        self.cpus(self.servers)
    }

    pub fn client_cpus(&self) -> f64 {
        self.cpus(self.client)
    }

    pub fn other_cpus(&self) -> f64 {
        self.cpus(self.other)
    }

    /// The servers' CPU time per request, µs.
    pub fn server_micros_per(&self, requests: u64) -> Option<f64> {
        micros_per(self.servers, requests)
    }

    /// The load client's CPU time per request, µs.
    pub fn client_micros_per(&self, requests: u64) -> Option<f64> {
        micros_per(self.client, requests)
    }

    fn cpus(&self, ticks: u64) -> f64 {
        if self.seconds > 0.0 {
            ticks as f64 / TICKS_PER_SECOND / self.seconds
        } else {
            f64::NAN
        }
    }
}

fn micros_per(ticks: u64, requests: u64) -> Option<f64> {
    (requests > 0).then(|| ticks as f64 / TICKS_PER_SECOND * 1e6 / requests as f64)
}

/// User + system time of a process, all its threads, in clock ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses: state is
    // the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 1..)?.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Resets the process's `VmHWM` to its current RSS (Linux ≥ 4.0).
pub fn reset_peak_rss(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// The process's `VmHWM`: its peak RSS since it started or since the last
/// reset, KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
