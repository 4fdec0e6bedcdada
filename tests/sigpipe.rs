//! A destination that disappears must not kill the process: in a child process whose
//! `SIGPIPE` disposition is the default (terminate), transfers into a pipe whose reader
//! closed and a socket whose peer closed end with `EPIPE`/`ECONNRESET` errors on every
//! backend and strategy, and the process lives on.

mod common;

use std::io::Write;
use std::process::Command;

use ringsplice::{Strategy, Transfer};

const CHILD_ENV: &str = "RINGSPLICE_TEST_SIGPIPE_CHILD";

#[test]
#[ignore = "run in a child process by writing_to_a_vanished_peer_does_not_kill"]
fn child_sigpipe() {
    assert!(std::env::var(CHILD_ENV).is_ok(), "run by the parent test");
    // SAFETY: restoring the default disposition; no handler is installed.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let payload = vec![5u8; 4 << 20];
    let _g = common::serial();
    common::run_configs(
        &common::configs(&[Strategy::Chain, Strategy::Inline]),
        |cfg| {
            let (b, s) = (cfg.backend, cfg.strategy);
            let mut e = cfg.engine();
            // Socket source into a pipe whose read end is closed (direct splice).
            let (mut w, src) = common::tcp_pair();
            let (r, pw) = std::io::pipe().unwrap();
            drop(r);
            w.write_all(&payload[..100_000]).unwrap();
            e.submit(Transfer::new(src, pw).strategy(s)).unwrap();
            let c = common::wait_one(&mut e, "transfer");
            let errno = c.result.as_ref().err().and_then(|x| x.raw_os_error());
            assert_eq!(errno, Some(libc::EPIPE), "{b:?} {s:?}: {:?}", c.result);
            assert_eq!(c.delivered, 0);

            // Socket to a socket whose peer closed: the first write may be accepted by the
            // kernel (then RST), later ones fail with EPIPE or ECONNRESET.
            let (mut w, src) = common::tcp_pair();
            let (dst, peer) = common::tcp_pair();
            drop(peer);
            let writer = std::thread::spawn(move || {
                let _ = w.write_all(&vec![9u8; 4 << 20]);
            });
            e.submit(Transfer::new(src, dst).strategy(s)).unwrap();
            let c = common::wait_one(&mut e, "transfer");
            let errno = c.result.as_ref().err().and_then(|x| x.raw_os_error());
            assert!(
                matches!(errno, Some(libc::EPIPE | libc::ECONNRESET)),
                "{b:?} {s:?}: {:?}",
                c.result
            );
            drop(c);
            writer.join().unwrap();
            eprintln!("{b:?} {s:?}: alive after EPIPE");
        },
    );
}

#[test]
fn writing_to_a_vanished_peer_does_not_kill() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["child_sigpipe", "--exact", "--ignored", "--nocapture"])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        out.status.signal(),
        None,
        "child killed by a signal:\n{stdout}\n{stderr}"
    );
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child failed:\n{stdout}\n{stderr}"
    );
}
