//! Child processes, for behaviour that must be observed with `SIGPIPE` at its default.

use std::io::Read;
use std::process::{Child, ExitStatus};
use std::thread::JoinHandle;
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
    let out = read_in_thread(
        "rs-test-child-out",
        child.stdout.take().expect("stdout"),
        "",
    );
    let err = read_in_thread(
        "rs-test-child-err",
        child.stderr.take().expect("stderr"),
        "",
    );
    let status = wait_child(
        &mut child,
        Duration::from_secs(120),
        &format!("child {test}"),
    );
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

/// Reads `from` to its end on a thread of its own, after `start`: a child's output, so the
/// child never blocks on a full pipe.
pub(crate) fn read_in_thread(
    name: &str,
    mut from: impl Read + Send + 'static,
    start: &str,
) -> JoinHandle<String> {
    let mut s = start.to_string();
    spawn_named(name, move || {
        let _ = from.read_to_string(&mut s);
        s
    })
}

/// Waits for `child` to exit; past `limit` it is killed and the test fails (a hang guard).
pub(crate) fn wait_child(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: hang guard: still running after {limit:?} (killed)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
