//! What only Linux's `/proc` shows: threads by name, open descriptors, CPU time,
//! wakeups, memory, a thread's write calls, and other processes. Tests that use these
//! are `#[cfg(target_os = "linux")]` too.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The number of this process's threads whose name starts with `prefix` (Linux
/// truncates thread names to 15 bytes, so keep prefixes short and unique per test).
pub fn threads_named(prefix: &str) -> usize {
    fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end().starts_with(prefix))
        .count()
}

/// The number of open file descriptors of this process.
pub fn open_fds() -> usize {
    fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The `/proc/self/task/TID` folder of the one thread of this process named exactly
/// `name`.
pub fn thread_dir(name: &str) -> PathBuf {
    let mut found = Vec::new();
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let path = task.unwrap().path();
        let Ok(comm) = fs::read_to_string(path.join("comm")) else { continue };
        if comm.trim_end() == name {
            found.push(path);
        }
    }
    assert_eq!(found.len(), 1, "expected exactly one thread named {name:?}, found {found:?}");
    found.pop().unwrap()
}

/// The `/proc/self/task/TID` folder of the calling thread.
pub fn current_task() -> PathBuf {
    Path::new("/proc").join(fs::read_link("/proc/thread-self").expect("read /proc/thread-self"))
}

/// A `NAME:   value` line of a `status` file.
fn status_field(status: &str, name: &str) -> Option<u64> {
    status.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(':')?.split_whitespace().next()?.parse().ok())
}

/// `voluntary_ctxt_switches` of the one thread of this process named exactly `name`: a
/// blocked thread's count stays flat, a polling one's climbs.
pub fn context_switches_of(name: &str) -> u64 {
    let status = fs::read_to_string(thread_dir(name).join("status")).unwrap();
    status_field(&status, "voluntary_ctxt_switches").expect("voluntary_ctxt_switches in status")
}

/// utime + stime, in clock ticks (10 ms each on Linux), from a `stat` file.
fn stat_ticks(stat: &str) -> u64 {
    // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..].split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// The CPU time the one thread named `name` has used: from `schedstat` (nanoseconds),
/// or `stat` (clock ticks) where the kernel has no schedstat.
pub fn cpu_time_of(name: &str) -> Duration {
    let dir = thread_dir(name);
    if let Ok(schedstat) = fs::read_to_string(dir.join("schedstat")) {
        let ns: u64 = schedstat.split_whitespace().next().unwrap().parse().unwrap();
        return Duration::from_nanos(ns);
    }
    Duration::from_millis(stat_ticks(&fs::read_to_string(dir.join("stat")).unwrap()) * 10)
}

/// The scheduler state of a thread: `S` while it sleeps in a system call.
pub fn task_state(task: &Path) -> Option<char> {
    let stat = fs::read_to_string(task.join("stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// How many write-like system calls (`write`, `writev`, `send`...) the calling thread
/// has made (`syscw` of its `io` file).
pub fn write_calls_of_this_thread() -> u64 {
    let io = fs::read_to_string(current_task().join("io")).expect("read /proc/thread-self/io");
    io.lines().find_map(|line| line.strip_prefix("syscw:")?.trim().parse().ok()).expect("syscw in io")
}

/// This process's resident set size, in KiB.
pub fn rss_kib() -> usize {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    status_field(&status, "VmRSS").expect("VmRSS in /proc/self/status") as usize
}

/// utime + stime of another process, in clock ticks (10 ms each).
pub fn cpu_ticks(pid: u32) -> u64 {
    stat_ticks(&fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat"))
}

/// Voluntary context switches of another process, summed over its threads: each time
/// one of them went to sleep.
pub fn voluntary_switches(pid: u32) -> u64 {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else { return 0 };
    tasks
        .filter_map(|task| fs::read_to_string(task.ok()?.path().join("status")).ok())
        .filter_map(|status| status_field(&status, "voluntary_ctxt_switches"))
        .sum()
}

/// The descriptors of another process numbered below `below`.
pub fn fds_below(pid: u32, below: usize) -> usize {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd");
    fds.filter_map(|fd| fd.ok()?.file_name().to_str()?.parse::<usize>().ok()).filter(|&fd| fd < below).count()
}

/// The pids whose parent is `parent`.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut children = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // proc(5): `pid (comm) state ppid ...`; comm may hold spaces, so split after ')'.
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..].split_whitespace().collect();
        if fields.get(1).and_then(|ppid| ppid.parse::<u32>().ok()) == Some(parent) {
            children.push(pid);
        }
    }
    children.sort_unstable();
    children
}

/// Whether `pid` is a process that has not exited. An orphan that exited may stay a
/// zombie until init reaps it: that counts as exited.
pub fn running(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..].trim_start().starts_with(['Z', 'X']),
        Err(_) => false,
    }
}

/// Whether `fd` of this process has `FD_CLOEXEC`, read from `/proc` (`O_CLOEXEC` in the
/// octal `flags`).
pub fn close_on_exec(fd: i32) -> bool {
    let info = fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    let flags = info.lines().find_map(|line| line.strip_prefix("flags:")).expect("flags in fdinfo");
    u32::from_str_radix(flags.trim(), 8).unwrap() & 0o2000000 != 0
}
