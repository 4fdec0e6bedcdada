//! The engine's runtime settings, as [`Builder`](crate::Builder) checked them. Everything
//! below the public face reads this, never the builder.

/// Which backend to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendPreference {
    /// io_uring when this kernel and sandbox allow it, else the fallback. The environment
    /// variable `RINGSPLICE_BACKEND` (`auto`, `io-uring`, `fallback`) replaces this choice
    /// (see [`Builder::backend`](crate::Builder::backend)).
    #[default]
    Auto,
    /// io_uring (Linux 5.7+, where `IORING_OP_SPLICE` appeared) or an error naming what is
    /// missing.
    IoUring,
    /// The readiness-driven fallback (epoll + inline splice), even where io_uring works.
    Fallback,
}

/// Settings; see the [`Builder`](crate::Builder) setter of each for its meaning and default.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) ring_entries: u32,
    pub(crate) max_transfers: usize,
    pub(crate) pipe_size: usize,
    pub(crate) pipe_pool_size: usize,
    pub(crate) pipe_budget: usize,
    pub(crate) chunk_size: usize,
    pub(crate) chain_depth: usize,
    pub(crate) iowq_max_workers: u32,
    pub(crate) fairness_bytes: usize,
    pub(crate) copy_threshold: u64,
    pub(crate) backend: BackendPreference,
    pub(crate) env_override: bool,
    pub(crate) probe_hide_splice: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            ring_entries: 256,
            max_transfers: 4096,
            pipe_size: 1 << 20,
            pipe_pool_size: 64,
            pipe_budget: 256 << 20,
            chunk_size: 1 << 20,
            chain_depth: 4,
            iowq_max_workers: 4,
            fairness_bytes: 4 << 20,
            copy_threshold: 0,
            backend: BackendPreference::Auto,
            env_override: true,
            probe_hide_splice: false,
        }
    }
}
