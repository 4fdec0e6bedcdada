//! One test at a time per test binary (fd and thread counts are process-wide), the threads
//! libtest runs tests on, and the running test's name.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());
/// Threads libtest runs tests on (registered by [`serial`]): not leaks.
pub(super) static HARNESS_THREADS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

thread_local! {
    static HOLDS_SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Held for the whole test: tests of one binary run one at a time.
#[must_use = "hold the guard for the whole test"]
pub(crate) struct Serial {
    _guard: MutexGuard<'static, ()>,
}

impl Drop for Serial {
    fn drop(&mut self) {
        HOLDS_SERIAL.with(|h| h.set(false));
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Serial")
    }
}

/// Takes the binary-wide test lock (recovering it from a test that panicked). Call it first
/// in every test: `let _g = common::serial();`.
pub(crate) fn serial() -> Serial {
    HARNESS_THREADS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(current_tid());
    let guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    HOLDS_SERIAL.with(|h| h.set(true));
    Serial { _guard: guard }
}

pub(super) fn assert_serial() {
    assert!(
        HOLDS_SERIAL.with(|h| h.get()),
        "take `let _g = common::serial();` at the start of the test"
    );
}

pub(super) fn current_tid() -> u32 {
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    let link = std::fs::read_link("/proc/thread-self").expect("readlink /proc/thread-self");
    link.file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/thread-self link {link:?}"))
}

/// The name of the running test (libtest names its threads after the tests).
pub(crate) fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}
