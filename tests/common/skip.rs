//! Skips, and the probe they rest on. A test skips only through [`skip`], which says why
//! where it is seen (libtest captures `print!`/`eprint!` output of passing tests), and only
//! for something this machine lacks: the io_uring backend (`Error::Unsupported`, probed by
//! [`io_uring_status`]) or a feature a test probes for itself. Any other error from building
//! an engine fails the test.

use std::fmt;
use std::io::{self, Write};
use std::sync::OnceLock;

use ringsplice::{BackendPreference, Builder, Engine, Error};

use super::test_name;

/// Writes `msg` and a newline straight to the process's stderr, in one write. libtest's
/// capture hooks only the `print!`/`eprint!` family, so this shows for passing tests too.
pub(crate) fn say(msg: &str) {
    let _ = io::stderr().lock().write_all(format!("{msg}\n").as_bytes());
}

/// Says that the running test, or the part of it named in `reason`, does not run here and
/// why: `SKIPPED: <test>: <reason>` on stderr ([`say`]). The caller then returns or moves on.
pub(crate) fn skip(reason: impl fmt::Display) {
    say(&format!("SKIPPED: {}: {reason}", test_name()));
}

/// Whether an io_uring engine can be built here: `Err(why)` when the kernel or sandbox
/// refuses (`Error::Unsupported`: io_uring or its splice opcode unavailable, io_uring
/// disabled, seccomp). Any other error is a bug and panics.
pub(crate) fn io_uring_status() -> Result<(), String> {
    static STATUS: OnceLock<Result<(), String>> = OnceLock::new();
    STATUS
        .get_or_init(|| {
            match Engine::builder()
                .backend(BackendPreference::IoUring)
                .honor_env(false)
                .build()
            {
                Ok(e) => {
                    drop(e);
                    Ok(())
                }
                Err(Error::Unsupported(why)) => Err(why),
                Err(e) => panic!("building an io_uring engine failed unexpectedly: {e}"),
            }
        })
        .clone()
}

/// Whether the io_uring backend is there; where it is not, says so ([`skip`]) and returns
/// `false`, for the test to return.
pub(crate) fn io_uring_or_skip() -> bool {
    match io_uring_status() {
        Ok(()) => true,
        Err(why) => {
            skip(format_args!("io_uring backend unsupported here: {why}"));
            false
        }
    }
}

/// An engine of `backend` (deaf to `RINGSPLICE_BACKEND`), its builder passed through
/// `tune` first. `None`, after a [`skip`], only where io_uring is asked for and is
/// unsupported here (`Error::Unsupported`); any other error fails the test.
pub(crate) fn engine_or_skip(
    backend: BackendPreference,
    tune: impl FnOnce(Builder) -> Builder,
) -> Option<Engine> {
    let b = tune(Engine::builder().backend(backend).honor_env(false));
    match b.build() {
        Ok(e) => Some(e),
        Err(Error::Unsupported(why)) if backend == BackendPreference::IoUring => {
            skip(format_args!("io_uring backend unsupported here: {why}"));
            None
        }
        Err(e) => panic!("building a {backend:?} engine failed: {e}"),
    }
}
