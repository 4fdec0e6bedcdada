//! Which backend runs, and why: the operator's variable, the builder's preference and
//! what the kernel can do, decided in one place.

use std::fmt;

use crate::config::{BackendPreference, Config};
use crate::driver::Driver;
use crate::error::{Error, Result};

/// The backend an [`Engine`](crate::Engine) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring: linked `IORING_OP_SPLICE` chains and `IORING_OP_POLL_ADD` readiness.
    /// Linux 5.7+ (`IORING_OP_SPLICE`); timeouts while waiting need 5.11+
    /// (`IORING_FEAT_EXT_ARG`, else the engine waits on its eventfd).
    IoUring,
    /// epoll readiness and inline `splice(2)` / `sendfile(2)` / `copy_file_range(2)` /
    /// `read(2)` / `write(2)`: any Linux the crate builds for.
    Fallback,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::IoUring => "io_uring",
            Backend::Fallback => "fallback (epoll + splice)",
        })
    }
}

/// The environment variable that overrides the builder's backend preference.
pub const BACKEND_ENV: &str = "RINGSPLICE_BACKEND";

/// Reads [`BACKEND_ENV`]: `Ok(None)` when unset or empty.
fn env_preference() -> Result<Option<BackendPreference>, String> {
    use BackendPreference as P;
    match std::env::var(BACKEND_ENV) {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().to_ascii_lowercase().as_str() {
            "" => Ok(None),
            "auto" => Ok(Some(P::Auto)),
            "io-uring" | "io_uring" | "iouring" | "uring" => Ok(Some(P::IoUring)),
            "fallback" | "epoll" => Ok(Some(P::Fallback)),
            other => Err(format!(
                "{BACKEND_ENV}={other:?}: expected auto, io-uring or fallback"
            )),
        },
    }
}

/// Builds the driver the settings and the kernel call for: `(driver, backend, why)`.
pub(crate) fn select(cfg: &Config) -> Result<(Driver, Backend, String)> {
    let mut pref = cfg.backend;
    let mut why_env = String::new();
    // The operator's variable refines `Auto` only: a backend the code names wins.
    if cfg.env_override
        && cfg.backend == BackendPreference::Auto
        && let Some(p) = env_preference().map_err(Error::InvalidInput)?
    {
        pref = p;
        why_env = format!(" ({BACKEND_ENV} set)");
    }
    let fallback = |why: String| Ok((Driver::epoll()?, Backend::Fallback, why));
    match pref {
        BackendPreference::Fallback => fallback(format!("fallback requested{why_env}")),
        BackendPreference::IoUring => match Driver::uring(cfg) {
            Ok(d) => Ok((d, Backend::IoUring, format!("io_uring requested{why_env}"))),
            Err(why) => Err(Error::Unsupported(why)),
        },
        BackendPreference::Auto => match Driver::uring(cfg) {
            Ok(d) => {
                let why = "io_uring with IORING_OP_SPLICE available".to_string();
                Ok((d, Backend::IoUring, why))
            }
            Err(why) => fallback(format!("fell back: {why}")),
        },
    }
}
