//! `SIGPIPE`: whether this process ignores it, and a guard for hosts that do not.

/// Whether `SIGPIPE` is ignored in this process (Rust binaries ignore it before `main`; a
/// C host may not).
pub(crate) fn sigpipe_ignored() -> bool {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only queries; `old` is a valid out-pointer.
    let r = unsafe { libc::sigaction(libc::SIGPIPE, std::ptr::null(), old.as_mut_ptr()) };
    if r != 0 {
        return false;
    }
    // SAFETY: sigaction succeeded and filled `old`.
    let old = unsafe { old.assume_init() };
    old.sa_sigaction == libc::SIG_IGN
}

fn sigpipe_set() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set; sigaddset takes a valid signal number.
    unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        libc::sigaddset(set.as_mut_ptr(), libc::SIGPIPE);
        set.assume_init()
    }
}

/// Runs writes with `SIGPIPE` blocked and a pending one consumed, for hosts that have not
/// ignored it: a splice or write into a closed pipe or socket then fails with `EPIPE`
/// instead of killing the process. Off (free) where `SIGPIPE` is ignored.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigpipeGuard {
    on: bool,
}

impl SigpipeGuard {
    /// A guard that is on unless this process ignores `SIGPIPE`.
    pub(crate) fn for_this_process() -> SigpipeGuard {
        SigpipeGuard {
            on: !sigpipe_ignored(),
        }
    }

    /// Runs `f` guarded (when `needed` and the guard is on).
    ///
    /// The pending signal is taken whatever `f` returned: before Linux 6.5 a splice into a
    /// socket goes through `sendpage` one pipe buffer at a time, and when a later buffer
    /// meets the closed peer the kernel raises `SIGPIPE` yet the splice returns the bytes
    /// the earlier buffers moved (`splice_from_pipe` keeps a partial count). Found by the
    /// kernel matrix on 6.1 (`faults::destination_closed_early_does_not_raise_sigpipe`).
    pub(crate) fn run<R>(self, needed: bool, f: impl FnOnce() -> R) -> R {
        if !(self.on && needed) {
            return f();
        }
        let set = sigpipe_set();
        let mut old = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: both pointers are valid sigsets; pthread_sigmask cannot fail with a
        // valid `how`, so `old` is filled.
        let old = unsafe {
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, old.as_mut_ptr());
            old.assume_init()
        };
        let r = f();
        let zero = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timeout; EAGAIN (none pending) is fine. Then `old` is a
        // valid sigset from pthread_sigmask.
        unsafe {
            libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
            libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        }
        r
    }
}
