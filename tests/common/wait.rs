//! Waiting, always under a hang guard: for completions, for a condition while driving the
//! engine, or for anything else; and the check of a successful completion. The deadlines
//! turn hangs into clear failures and are never timing assertions.

use std::time::{Duration, Instant};

use ringsplice::{Completion, Engine, Error, TransferId};

/// How long any single wait may take before the test declares a hang. Generous: it only
/// turns a hang into a clear failure.
pub(crate) const HANG_GUARD: Duration = Duration::from_secs(30);

/// How long dropping an engine may take before the test calls it a hang.
pub(crate) const DROP_GUARD: Duration = Duration::from_secs(20);

/// Waits until `n` completions have arrived; panics after [`HANG_GUARD`].
pub(crate) fn wait_n(e: &mut Engine, n: usize, what: &str) -> Vec<Completion> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut out = Vec::new();
    while out.len() < n {
        if e.in_flight() == 0 {
            panic!(
                "{what}: {} of {n} completions arrived and nothing is in flight: {out:#?}",
                out.len()
            );
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: hang guard: {} of {n} completions after {HANG_GUARD:?}; in flight {}; \
                 stats {:?}",
                out.len(),
                e.in_flight(),
                e.stats()
            );
        }
        e.wait(&mut out, Some(Duration::from_millis(250)))
            .unwrap_or_else(|err| panic!("{what}: Engine::wait failed: {err}"));
    }
    assert_eq!(
        out.len(),
        n,
        "{what}: more completions than transfers: {out:#?}"
    );
    out
}

/// Waits for one completion.
pub(crate) fn wait_one(e: &mut Engine, what: &str) -> Completion {
    wait_n(e, 1, what).pop().expect("one completion")
}

/// Drives the engine with `poll` (and short `wait`s) until `cond` holds, collecting any
/// completions that arrive meanwhile. Panics after [`HANG_GUARD`].
pub(crate) fn pump_until(
    e: &mut Engine,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> Vec<Completion> {
    let deadline = Instant::now() + HANG_GUARD;
    let mut out = Vec::new();
    loop {
        e.poll(&mut out)
            .unwrap_or_else(|err| panic!("{what}: Engine::poll failed: {err}"));
        if cond() {
            return out;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: hang guard: condition not reached after {HANG_GUARD:?}; completions \
                 {out:#?}; stats {:?}",
                e.stats()
            );
        }
        e.wait(&mut out, Some(Duration::from_millis(5)))
            .unwrap_or_else(|err| panic!("{what}: Engine::wait failed: {err}"));
    }
}

/// Waits for a condition without an engine (a helper thread's progress, say).
pub(crate) fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG_GUARD;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: not reached after {HANG_GUARD:?}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Asserts a completion's bookkeeping: id, tag, result `Ok`, exact delivered count, nothing
/// undelivered.
pub(crate) fn assert_ok_completion(
    c: &Completion,
    id: TransferId,
    tag: u64,
    delivered: u64,
    what: &str,
) {
    assert!(
        c.result.is_ok(),
        "{what}: result {:?} (completion {c:?})",
        c.result
    );
    assert!(c.is_ok(), "{what}: is_ok() disagrees with result");
    assert_eq!(c.id, id, "{what}: completion id");
    assert_eq!(c.tag, tag, "{what}: completion tag");
    assert_eq!(c.delivered, delivered, "{what}: delivered");
    assert_eq!(c.undelivered, 0, "{what}: undelivered on success");
}

/// Waits (`wait` turns) until the completion of `id` arrives; others are kept in `seen`.
pub(crate) fn wait_for(
    e: &mut Engine,
    id: TransferId,
    seen: &mut Vec<Completion>,
    what: &str,
) -> Completion {
    let deadline = Instant::now() + HANG_GUARD;
    loop {
        if let Some(p) = seen.iter().position(|c| c.id == id) {
            return seen.remove(p);
        }
        assert!(
            Instant::now() < deadline,
            "{what}: hang guard: no completion after {HANG_GUARD:?}; others {seen:#?}; stats \
             {:?}",
            e.stats()
        );
        e.wait(seen, Some(Duration::from_millis(5)))
            .unwrap_or_else(|err| panic!("{what}: wait: {err}"));
    }
}

/// The errno of a failed result.
pub(crate) fn errno(r: &Result<(), Error>) -> Option<i32> {
    r.as_ref().err().and_then(|e| e.raw_os_error())
}
