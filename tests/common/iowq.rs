//! io_uring's io-wq workers and the thread they belong to: what a dropped engine leaves
//! behind, per kernel.

use std::sync::OnceLock;

use super::serial::current_tid;
use super::{say, task_snapshot, wait_until};

/// The io-wq workers of the thread `tid` (their `comm` is `iou-wrk-<tid>`).
pub(crate) fn workers_of(tid: u32) -> usize {
    let name = format!("iou-wrk-{tid}");
    task_snapshot().values().filter(|c| **c == name).count()
}

/// The io-wq workers of the calling thread.
pub(crate) fn mine() -> usize {
    workers_of(current_tid())
}

/// The calling thread's id.
pub(crate) fn tid() -> u32 {
    current_tid()
}

/// Idle workers a thread keeps after its last ring is gone on kernels without
/// exit-on-idle: io-wq never lets the last worker of an accounting class (bounded,
/// unbounded) time out, so one of each stays until the thread exits.
pub(crate) const KEPT_PER_THREAD: usize = 2;

/// Whether this kernel's io-wq lets idle workers exit once their task has no ring left
/// ("io-wq: add exit-on-idle state", 2026): probed as the kernel function that patch
/// adds, `io_wq_set_exit_on_idle`, in `/proc/kallsyms` (names are listed even where
/// addresses are hidden). Without it, [`KEPT_PER_THREAD`] workers stay with the thread.
pub(crate) fn exit_on_idle() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| {
        let syms = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let on = syms
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some("io_wq_set_exit_on_idle"));
        if syms.is_empty() {
            say("note: /proc/kallsyms unreadable: io-wq exit-on-idle assumed absent");
        }
        on
    })
}

/// What a dropped engine leaves on its (still running) thread, stated for every
/// kernel: with exit-on-idle, no worker once they are idle; without it, at most
/// [`KEPT_PER_THREAD`] once the others have timed out (io-wq's idle timeout is 5 s).
/// Either way they end when the thread exits, which [`run_configs`]' leak check
/// asserts.
pub(crate) fn assert_released_after_drop(what: &str) {
    let limit = if exit_on_idle() { 0 } else { KEPT_PER_THREAD };
    wait_until(
        &format!(
            "{what}: at most {limit} io-wq workers left after the drop (exit-on-idle: {})",
            exit_on_idle()
        ),
        || mine() <= limit,
    );
}
