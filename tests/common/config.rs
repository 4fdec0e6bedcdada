//! The backend × strategy matrix: [`Config`], the lists of configurations, and
//! [`run_configs`], which runs a test body under each on a thread of its own inside a leak
//! check, skipping io_uring configurations (through [`skip`]) where io_uring is unsupported.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};

use ringsplice::{BackendPreference, Builder, Engine, Strategy, Transfer};

use super::serial::assert_serial;
use super::threads::panic_text;
use super::{LeakCheck, io_uring_status, skip, test_name};

/// One engine configuration of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) backend: BackendPreference,
    pub(crate) strategy: Strategy,
}

/// Both backends.
pub(crate) const BACKENDS: [BackendPreference; 2] =
    [BackendPreference::IoUring, BackendPreference::Fallback];
/// Every strategy.
pub(crate) const STRATEGIES: [Strategy; 3] = [Strategy::Chain, Strategy::Inline, Strategy::Auto];

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = match self.backend {
            BackendPreference::IoUring => "io_uring",
            BackendPreference::Fallback => "fallback",
            BackendPreference::Auto => "auto",
        };
        write!(f, "{b}/{:?}", self.strategy)
    }
}

impl Config {
    /// A builder for this backend, deaf to `RINGSPLICE_BACKEND`.
    pub(crate) fn builder(&self) -> Builder {
        Engine::builder().backend(self.backend).honor_env(false)
    }

    /// An engine for this configuration (panics, naming it, if it cannot be built).
    pub(crate) fn engine(&self) -> Engine {
        self.engine_from(self.builder())
    }

    /// Builds `b` (made from [`Config::builder`]) and checks the backend is the one asked.
    pub(crate) fn engine_from(&self, b: Builder) -> Engine {
        let e = b
            .build()
            .unwrap_or_else(|e| panic!("[{self}] building the engine failed: {e}"));
        let want = match self.backend {
            BackendPreference::IoUring => ringsplice::Backend::IoUring,
            _ => ringsplice::Backend::Fallback,
        };
        assert_eq!(
            e.backend(),
            want,
            "[{self}] wrong backend: {}",
            e.backend_reason()
        );
        e
    }

    /// A transfer with this configuration's strategy.
    pub(crate) fn transfer(
        &self,
        src: impl Into<ringsplice::Endpoint>,
        dst: impl Into<ringsplice::Endpoint>,
    ) -> Transfer {
        Transfer::new(src, dst).strategy(self.strategy)
    }
}

/// Runs `f` under each configuration, each inside its own leak check. A configuration that
/// fails does not stop the others: at the end, one panic lists every failing configuration
/// with its message. io_uring configurations are skipped ([`skip`]) where the io_uring
/// backend is unsupported here ([`io_uring_status`]).
pub(crate) fn run_configs(configs: &[Config], mut f: impl FnMut(Config) + Send) {
    assert_serial();
    let test = test_name();
    let mut failures = Vec::new();
    for &cfg in configs {
        if cfg.backend == BackendPreference::IoUring
            && let Err(why) = io_uring_status()
        {
            skip(format_args!(
                "[{cfg}] io_uring backend unsupported here: {why}"
            ));
            continue;
        }
        let mut leaks = LeakCheck::new(format!("{test} [{cfg}]"));
        // After a failure, helper threads of the failed configuration may still close
        // their fds: only new fds and threads count as leaks then.
        leaks.report_closed = failures.is_empty();
        // Each configuration runs on a thread of its own, which has exited when the leak
        // check runs: io-wq workers belong to the thread that submitted their work, and on
        // kernels without io-wq's exit-on-idle the last idle worker of each class lives as
        // long as that thread (see `iowq`).
        match on_own_thread(&test, || f(cfg)) {
            Ok(()) => {
                if let Err(p) = panic::catch_unwind(AssertUnwindSafe(|| leaks.check())) {
                    failures.push(format!("[{cfg}] {}", panic_text(&*p)));
                }
            }
            Err(p) => {
                let msg = panic_text(&*p);
                if msg.contains(&format!("[{cfg}]")) {
                    failures.push(msg);
                } else {
                    failures.push(format!("[{cfg}] {msg}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {} configurations failed:\n{}",
            failures.len(),
            configs.len(),
            failures.join("\n")
        );
    }
}

/// Runs `f` on a new thread named `name` (so [`test_name`] still works inside it) and
/// waits for it to exit; a panic inside comes back as `Err`.
pub(crate) fn on_own_thread<T: Send>(
    name: &str,
    f: impl FnOnce() -> T + Send,
) -> std::thread::Result<T> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn_scoped(s, f)
            .expect("spawn a test thread")
            .join()
    })
}

/// Every backend × every strategy.
pub(crate) fn all_configs() -> Vec<Config> {
    configs(&STRATEGIES)
}

/// Every backend × the given strategies.
pub(crate) fn configs(strategies: &[Strategy]) -> Vec<Config> {
    let mut v = Vec::new();
    for backend in BACKENDS {
        for &strategy in strategies {
            v.push(Config { backend, strategy });
        }
    }
    v
}

/// Runs `f` under both backends × all three strategies.
pub(crate) fn for_each_config(f: impl FnMut(Config) + Send) {
    run_configs(&all_configs(), f);
}
