//! Which backend runs, and why.

use std::fmt;

/// The backend an [`Engine`](crate::Engine) runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring: linked `IORING_OP_SPLICE` chains and `IORING_OP_POLL_ADD` readiness.
    IoUring,
    /// epoll readiness and inline `splice(2)` / `read(2)` / `write(2)`.
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
pub(crate) fn env_preference() -> Result<Option<crate::BackendPreference>, String> {
    use crate::BackendPreference as P;
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
