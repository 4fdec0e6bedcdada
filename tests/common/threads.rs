//! Helper threads: named (names show in leak reports) and always joined under a deadline.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::HANG_GUARD;

pub(super) fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

/// Spawns a named helper thread (names show in leak reports).
pub(crate) fn spawn_named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawn helper thread")
}

/// Joins a helper thread, panicking (naming it) if it does not finish within `limit` or if
/// it panicked.
pub(crate) fn join_within<T>(h: JoinHandle<T>, limit: Duration, what: &str) -> T {
    let deadline = Instant::now() + limit;
    while !h.is_finished() {
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: helper thread still running after {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    h.join()
        .unwrap_or_else(|p| panic!("{what}: helper thread panicked: {}", panic_text(&*p)))
}

/// Joins with [`HANG_GUARD`].
pub(crate) fn join<T>(h: JoinHandle<T>, what: &str) -> T {
    join_within(h, HANG_GUARD, what)
}
