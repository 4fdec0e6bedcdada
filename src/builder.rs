//! Builder: the engine's settings, their defaults and their checks.

use crate::config::{BackendPreference, Config};
use crate::core::id::{self, MAX_ROUND_OPS};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Largest [`Builder::chain_depth`]: a round (a `POLL_ADD` and the pairs) must number its
/// operations in the index bits of a token (core/slots.rs).
const MAX_CHAIN_DEPTH: usize = (MAX_ROUND_OPS - 1) / 2;

/// Largest [`Builder::ring_entries`]: the kernel's `IORING_MAX_ENTRIES` (32768 since Linux
/// 5.5, io_uring/io_uring.h), past which `io_uring_setup` fails with `EINVAL`.
const MAX_RING_ENTRIES: u32 = 32768;

impl Engine {
    /// An engine with the default settings ([`Builder`]).
    ///
    /// # Errors
    /// As [`Builder::build`].
    pub fn new() -> Result<Engine> {
        Builder::default().build()
    }

    /// Settings for a new engine.
    pub fn builder() -> Builder {
        Builder::default()
    }
}

/// Settings for an [`Engine`]. Every setter documents its default.
///
/// ```no_run
/// let engine = ringsplice::Engine::builder()
///     .max_transfers(10_000)
///     .pipe_size(1 << 20)
///     .build()?;
/// # Ok::<(), ringsplice::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    cfg: Config,
}

impl Builder {
    /// Submission queue entries (default 256, at most 32768, rounded up to a power of two;
    /// the completion queue is twice that). A full queue is flushed, never dropped, so this
    /// bounds batching, not concurrency. The fallback backend checks but does not use it.
    pub fn ring_entries(mut self, n: u32) -> Builder {
        self.cfg.ring_entries = n;
        self
    }

    /// Most transfers in flight at once (default 4096); past it `submit` refuses with
    /// [`Error::Full`].
    pub fn max_transfers(mut self, n: usize) -> Builder {
        self.cfg.max_transfers = n;
        self
    }

    /// Size asked for each pipe with `F_SETPIPE_SZ` (default 1 MiB, the default
    /// `/proc/sys/fs/pipe-max-size`). The kernel may round it up or refuse it (`EPERM` past
    /// the user's pipe quota); the size it grants is what is used and budgeted.
    pub fn pipe_size(mut self, bytes: usize) -> Builder {
        self.cfg.pipe_size = bytes;
        self
    }

    /// Idle empty pipes kept for reuse (default 64).
    pub fn pipe_pool_size(mut self, n: usize) -> Builder {
        self.cfg.pipe_pool_size = n;
        self
    }

    /// Total capacity of all pipes alive at once, leased or idle (default 256 MiB). A
    /// transfer that needs a pipe past it waits until one is returned.
    pub fn pipe_budget(mut self, bytes: usize) -> Builder {
        self.cfg.pipe_budget = bytes;
        self
    }

    /// Most bytes asked of one splice (default 1 MiB; never more than the pipe holds).
    pub fn chunk_size(mut self, bytes: usize) -> Builder {
        self.cfg.chunk_size = bytes;
        self
    }

    /// Fill/drain pairs linked into one io_uring submission for a regular-file source
    /// (default 4, at most 127: a round's operations are numbered in 8 bits; never more
    /// than half of [`ring_entries`](Builder::ring_entries)). io_uring backend only.
    pub fn chain_depth(mut self, pairs: usize) -> Builder {
        self.cfg.chain_depth = pairs;
        self
    }

    /// Bound on io_uring's io-wq worker threads, bounded and unbounded pools alike
    /// (default 4; `IORING_REGISTER_IOWQ_MAX_WORKERS`, Linux 5.15+, ignored before).
    pub fn iowq_max_workers(mut self, n: u32) -> Builder {
        self.cfg.iowq_max_workers = n;
        self
    }

    /// Most bytes one transfer moves inline in one `poll` pass before the others get their
    /// turn (default 4 MiB).
    pub fn fairness_bytes(mut self, bytes: usize) -> Builder {
        self.cfg.fairness_bytes = bytes;
        self
    }

    /// Largest known length that [`Strategy::Auto`](crate::Strategy::Auto) copies with
    /// `read`/`write` instead of splicing, when source and destination are sockets
    /// (default 0: never). Measured on Linux 6.18 over loopback, splicing even 4 KiB
    /// messages cost the engine's thread no more CPU than copying them (README,
    /// Performance: small transfers), so the default splices everything; raise it where
    /// copying measures cheaper, or to keep small messages out of the pipe budget.
    pub fn copy_threshold(mut self, bytes: u64) -> Builder {
        self.cfg.copy_threshold = bytes;
        self
    }

    /// Which backend to run (default [`BackendPreference::Auto`]).
    ///
    /// An explicit [`IoUring`](BackendPreference::IoUring) or
    /// [`Fallback`](BackendPreference::Fallback) is what runs: the environment does not
    /// change it, and `IoUring` fails with [`Error::Unsupported`] where it cannot be had.
    /// Only `Auto` listens to the operator's `RINGSPLICE_BACKEND` (`auto`, `io-uring`,
    /// `fallback`; anything else fails the build with [`Error::InvalidInput`]), unless
    /// [`honor_env(false)`](Builder::honor_env) was called.
    /// [`Engine::backend_reason`] says when the variable made the choice.
    ///
    /// [`Engine::backend_reason`]: crate::Engine::backend_reason
    pub fn backend(mut self, b: BackendPreference) -> Builder {
        self.cfg.backend = b;
        self
    }

    /// Whether `RINGSPLICE_BACKEND` may decide for [`BackendPreference::Auto`] (default
    /// `true`; an explicit [`Builder::backend`] never listens to it).
    pub fn honor_env(mut self, yes: bool) -> Builder {
        self.cfg.env_override = yes;
        self
    }

    /// Testing aid: act as if `IORING_REGISTER_PROBE` did not report `IORING_OP_SPLICE`.
    #[doc(hidden)]
    pub fn pretend_no_splice_opcode(mut self, yes: bool) -> Builder {
        self.cfg.probe_hide_splice = yes;
        self
    }

    /// Builds the engine.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for inconsistent settings; [`Error::Unsupported`] when
    /// [`BackendPreference::IoUring`] was asked for and cannot be had; [`Error::Io`] when a
    /// syscall of the setup fails.
    pub fn build(self) -> Result<Engine> {
        let c = self.cfg;
        let invalid = |m: String| Err(Error::InvalidInput(m));
        if c.ring_entries < 2 || c.ring_entries > MAX_RING_ENTRIES {
            return invalid(format!(
                "ring_entries must be between 2 and {MAX_RING_ENTRIES}"
            ));
        }
        if c.pipe_size == 0 || c.chunk_size == 0 || c.fairness_bytes == 0 {
            return invalid("pipe_size, chunk_size and fairness_bytes must be positive".into());
        }
        let one_pipe = crate::sys::granted_pipe_size(c.pipe_size);
        if c.pipe_budget < one_pipe {
            return Err(Error::PipeBudget(format!(
                "budget {} bytes is smaller than one pipe of {} bytes ({one_pipe} as the \
                 kernel sizes it)",
                c.pipe_budget, c.pipe_size
            )));
        }
        if c.chain_depth == 0 || c.chain_depth > MAX_CHAIN_DEPTH {
            return invalid(format!(
                "chain_depth must be between 1 and {MAX_CHAIN_DEPTH}"
            ));
        }
        // Every slot index and every round (a `POLL_ADD` plus the pairs) must fit the one
        // packing of ids and tokens.
        id::check_packing(c.max_transfers, 1 + 2 * c.chain_depth).map_err(Error::InvalidInput)?;
        Engine::with_config(c)
    }
}
