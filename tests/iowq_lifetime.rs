//! What a dropped io_uring engine leaves behind in io-wq worker threads, stated for every
//! kernel (KERNEL_REQUIREMENTS.md, "io-wq workers"):
//!
//! - io-wq belongs to the thread that submitted the work, not to the ring: its workers
//!   (`iou-wrk-<tid>`) end when that thread exits, on every kernel;
//! - while the thread lives, a kernel with io-wq's exit-on-idle (probed:
//!   `io_wq_set_exit_on_idle` in `/proc/kallsyms`) lets them all go once idle after the drop;
//!   a kernel without it keeps the last idle worker of each accounting class (bounded,
//!   unbounded): at most 2 per thread;
//! - engines made and dropped one after another on one thread reuse those workers: the
//!   count stays within the engine's io-wq bound and never grows with the number of
//!   engines.
//!
//! Skipped, saying so, where io_uring is unavailable (the fallback has no io-wq).

mod common;

use common::{Config, Kind, Rng, TempFile, iowq};
use ringsplice::{BackendPreference, Length, Strategy};

const CHAIN: Config = Config {
    backend: BackendPreference::IoUring,
    strategy: Strategy::Chain,
};

/// io-wq bound given to the engines here (bounded and unbounded classes alike).
const MAX_WORKERS: u32 = 3;

/// Runs a file → socket transfer under `Strategy::Chain`, whose every splice runs on an
/// io-wq worker, and returns the calling thread's worker count seen while it ran.
fn use_iowq(file: &TempFile, what: &str) -> usize {
    let mut e = CHAIN.engine_from(CHAIN.builder().iowq_max_workers(MAX_WORKERS));
    let len = file.contents().len() as u64;
    let (dst, sink) = common::destination_of(Kind::Tcp, "iowq", b"");
    let id = e
        .submit(
            CHAIN
                .transfer(file.open_read(), dst)
                .length(Length::Exact(len)),
        )
        .expect("submit");
    let c = common::wait_one(&mut e, what);
    common::assert_ok_completion(&c, id, 0, len, what);
    let seen = iowq::mine();
    drop(c);
    assert_eq!(sink.contents(what).len() as u64, len, "{what}");
    drop(e);
    seen
}

#[test]
fn workers_end_with_their_thread_on_every_kernel() {
    let _g = common::serial();
    if !common::io_uring_or_skip() {
        return;
    }
    let file = TempFile::with_contents("iowq-exit", &Rng::for_test("iowq").bytes(8 << 20));
    let (tid, seen) = common::on_own_thread("rs-test-iowq-submitter", || {
        let seen = use_iowq(&file, "thread exit");
        (iowq::tid(), seen)
    })
    .expect("submitter thread");
    assert!(
        seen > 0,
        "a Chain file transfer ran without an io-wq worker"
    );
    common::wait_until("io-wq workers of an exited thread", || {
        iowq::workers_of(tid) == 0
    });
}

#[test]
fn a_dropped_engine_leaves_at_most_one_idle_worker_per_class() {
    let _g = common::serial();
    if !common::io_uring_or_skip() {
        return;
    }
    let file = TempFile::with_contents("iowq-drop", &Rng::for_test("iowq").bytes(8 << 20));
    common::on_own_thread("rs-test-iowq-dropper", || {
        let seen = use_iowq(&file, "drop");
        assert!(
            seen > 0,
            "a Chain file transfer ran without an io-wq worker"
        );
        let limit = if iowq::exit_on_idle() {
            0
        } else {
            iowq::KEPT_PER_THREAD
        };
        common::say(&format!(
            "io-wq exit-on-idle: {}; {seen} workers while running, waiting for <= {limit}",
            iowq::exit_on_idle()
        ));
        common::wait_until("idle io-wq workers after the drop", || {
            iowq::mine() <= limit
        });
    })
    .expect("dropper thread");
}

#[test]
fn engines_made_one_after_another_reuse_the_workers() {
    let _g = common::serial();
    if !common::io_uring_or_skip() {
        return;
    }
    let file = TempFile::with_contents("iowq-reuse", &Rng::for_test("iowq").bytes(4 << 20));
    common::on_own_thread("rs-test-iowq-reuse", || {
        let bound = 2 * MAX_WORKERS as usize; // bounded + unbounded class
        for round in 0..6 {
            let seen = use_iowq(&file, &format!("round {round}"));
            assert!(
                seen <= bound,
                "round {round}: {seen} io-wq workers on one thread, bound {bound}"
            );
        }
        iowq::assert_released_after_drop("after six engines");
    })
    .expect("reuse thread");
}
