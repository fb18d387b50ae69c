//! What the kernel says about a process and the machine: CPU time and RSS from `/proc`,
//! the descriptor limit, the machine's description and the date.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// utime + stime of a whole process (every thread, also the ones that ended), in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// Microseconds per clock tick of `/proc/PID/stat`.
pub fn us_per_tick() -> f64 {
    1e6 / rustix::param::clock_ticks_per_second() as f64
}

/// Resident set size of a process, in kB (`VmRSS`).
pub fn rss_kb(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS:")
}

/// Number of threads of a process.
pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads:")
}

fn status_field(pid: u32, name: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

/// Raises the soft descriptor limit to the hard one (children inherit it). Returns the
/// soft limit in force afterwards.
pub fn raise_nofile() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}

/// One line about the machine: CPU model, CPUs, kernel, memory.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU".to_string(), |(_, v)| v.trim().to_string());
    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(String::new(), |kb| format!(", {:.0} GiB RAM", kb / 1024.0 / 1024.0));
    format!("{model}, nproc {nproc}{mem_gib}, Linux {kernel}")
}

/// The current UTC date and time, `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

/// CPU placement: the server process on some CPUs, the load generator's threads on the
/// others, so that neither the scheduler's placement nor the other side's load changes
/// from one run to the next.
#[derive(Clone, Debug)]
pub struct Pinning {
    pub server: Vec<usize>,
    pub clients: Vec<usize>,
}

impl Pinning {
    /// Upper half of the CPUs this process may use for the server, lower half for the
    /// clients; `None` with fewer than two.
    pub fn split() -> Option<Pinning> {
        let allowed = rustix::thread::sched_getaffinity(None).ok()?;
        let cpus: Vec<usize> = (0..rustix::thread::CpuSet::MAX_CPU).filter(|&c| allowed.is_set(c)).collect();
        if cpus.len() < 2 {
            return None;
        }
        let (clients, server) = cpus.split_at(cpus.len() / 2);
        Some(Pinning { server: server.to_vec(), clients: clients.to_vec() })
    }
}

/// Runs `f` with the calling thread bound to `cpus` (threads and processes it starts
/// inherit that), then restores the previous binding.
pub fn pinned<T>(cpus: Option<&[usize]>, f: impl FnOnce() -> T) -> T {
    let Some(cpus) = cpus else { return f() };
    let previous = rustix::thread::sched_getaffinity(None).ok();
    let mut set = rustix::thread::CpuSet::new();
    for &cpu in cpus {
        set.set(cpu);
    }
    let _ = rustix::thread::sched_setaffinity(None, &set);
    let result = f();
    if let Some(previous) = previous {
        let _ = rustix::thread::sched_setaffinity(None, &previous);
    }
    result
}

/// "0", "0-3", "1,3".
pub fn cpu_list(cpus: &[usize]) -> String {
    if cpus.len() > 1 && cpus.windows(2).all(|w| w[1] == w[0] + 1) {
        format!("{}-{}", cpus[0], cpus[cpus.len() - 1])
    } else {
        cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
    }
}

static PINNING: std::sync::OnceLock<Option<Pinning>> = std::sync::OnceLock::new();

/// Sets the placement for the whole run (once, before anything starts).
pub fn set_pinning(pinning: Option<Pinning>) {
    let _ = PINNING.set(pinning);
}

/// The server's CPUs, if pinning is on.
pub fn server_cpus() -> Option<&'static [usize]> {
    PINNING.get().and_then(Option::as_ref).map(|p| p.server.as_slice())
}

/// The load generator's CPUs, if pinning is on.
pub fn client_cpus() -> Option<&'static [usize]> {
    PINNING.get().and_then(Option::as_ref).map(|p| p.clients.as_slice())
}
