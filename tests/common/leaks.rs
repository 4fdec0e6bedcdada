//! Leak checks: the process's fds and threads, snapshotted and compared.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::serial::HARNESS_THREADS;

/// How long a leak check waits for io-wq workers (and the harness's own threads) to go.
pub(crate) const LEAK_SETTLE: Duration = Duration::from_secs(5);

/// Open fds of this process: number → what it refers to (`/proc/self/fd` link target).
pub(crate) fn fd_snapshot() -> BTreeMap<RawFd, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/fd").expect("read /proc/self/fd") {
        let entry = entry.expect("/proc/self/fd entry");
        let Some(fd) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed meanwhile (the directory's own fd, after the listing)
        };
        let target = target.to_string_lossy().into_owned();
        // The fd of the directory listing itself.
        if target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        out.insert(fd, target);
    }
    out
}

/// Threads of this process: tid → name (`comm`; io-wq workers are `iou-wrk-<tid>`).
pub(crate) fn task_snapshot() -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let entry = entry.expect("/proc/self/task entry");
        let Some(tid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "<gone>".into());
        out.insert(tid, comm);
    }
    out
}

/// The number of threads of this process (`/proc/self/task`).
pub(crate) fn thread_count() -> usize {
    task_snapshot().len()
}

/// Snapshot of the process's fds and threads; [`check`](LeakCheck::check) asserts they
/// come back to it (waiting up to [`LEAK_SETTLE`] for io-wq workers to exit).
#[derive(Debug)]
pub(crate) struct LeakCheck {
    what: String,
    fds: BTreeMap<RawFd, String>,
    tasks: BTreeSet<u32>,
    /// Whether an fd of the baseline that was closed counts as a failure.
    pub(crate) report_closed: bool,
}

impl LeakCheck {
    /// Takes the baseline. `what` names the scope in failure messages.
    pub(crate) fn new(what: impl Into<String>) -> LeakCheck {
        LeakCheck {
            what: what.into(),
            fds: fd_snapshot(),
            tasks: task_snapshot().into_keys().collect(),
            report_closed: true,
        }
    }

    fn differences(&self) -> Option<String> {
        let now = fd_snapshot();
        let mut msg = String::new();
        for (fd, target) in &now {
            match self.fds.get(fd) {
                Some(t) if t == target => {}
                _ => msg += &format!("\n  leaked fd {fd} -> {target}"),
            }
        }
        for (fd, target) in &self.fds {
            if self.report_closed && !now.contains_key(fd) {
                msg += &format!("\n  fd {fd} -> {target} was closed by someone else");
            }
        }
        let harness = HARNESS_THREADS
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for (tid, comm) in task_snapshot() {
            if !self.tasks.contains(&tid) && !harness.contains(&tid) {
                msg += &format!("\n  leaked thread {tid} ({comm})");
            }
        }
        (!msg.is_empty()).then_some(msg)
    }

    /// Asserts no fd or thread is left behind, allowing [`LEAK_SETTLE`] for threads to exit.
    pub(crate) fn check(self) {
        let deadline = Instant::now() + LEAK_SETTLE;
        loop {
            let Some(diff) = self.differences() else {
                return;
            };
            if Instant::now() >= deadline {
                panic!("{}: left behind after {:?}:{diff}", self.what, LEAK_SETTLE);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
