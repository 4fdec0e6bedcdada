//! Child processes, for behaviour that must be observed with `SIGPIPE` at its default.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{join, spawn_named, sys};

/// The environment variable that tells a test it runs as a child.
pub(crate) const CHILD_ENV: &str = "RINGSPLICE_INTEGRATION_CHILD";

/// Whether this process is a child started by [`run_child`].
pub(crate) fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Runs the test `test` (its full path in this binary) alone in a child process with
/// [`CHILD_ENV`] set, and asserts it exits successfully (not killed by a signal). Its output
/// is shown on failure.
pub(crate) fn run_child(test: &str) {
    use std::os::unix::process::ExitStatusExt;
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = std::process::Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child test process");
    let out_pipe = child.stdout.take().expect("stdout");
    let err_pipe = child.stderr.take().expect("stderr");
    let out = spawn_named("rs-test-child-out", move || {
        let mut s = String::new();
        let _ = { out_pipe }.read_to_string(&mut s);
        s
    });
    let err = spawn_named("rs-test-child-err", move || {
        let mut s = String::new();
        let _ = { err_pipe }.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {test}: hang guard: still running after 120 s (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let out = join(out, "child stdout reader");
    let err = join(err, "child stderr reader");
    if let Some(sig) = status.signal() {
        panic!(
            "child {test} was killed by signal {sig}{}\n--- stdout\n{out}\n--- stderr\n{err}",
            if sig == sys::SIGPIPE {
                " (SIGPIPE)"
            } else {
                ""
            }
        );
    }
    assert!(
        status.success(),
        "child {test} failed: {status}\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    assert!(
        out.contains("1 passed"),
        "child {test} did not run the test:\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}
