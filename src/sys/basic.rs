//! The `-1`-means-errno convention every call here follows, and small facts of the system.

/// A raw return value whose `-1` means "see errno".
pub(crate) trait MinusOne: Copy + PartialEq {
    const MINUS_ONE: Self;
}
impl MinusOne for i32 {
    const MINUS_ONE: i32 = -1;
}
impl MinusOne for isize {
    const MINUS_ONE: isize = -1;
}
impl MinusOne for i64 {
    const MINUS_ONE: i64 = -1;
}

/// Turns a libc return value of `-1` into `io::Error::last_os_error()`. The `unsafe` call
/// stays at the call site, where its `// SAFETY:` comment is.
pub(crate) fn cvt<T: MinusOne>(r: T) -> std::io::Result<T> {
    if r == T::MINUS_ONE {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// The system's page size.
pub(crate) fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    p.max(4096) as usize
}

/// Converts an optional timeout into `poll`/`epoll_wait` milliseconds, rounding up so a short
/// timeout does not become a busy loop.
pub(crate) fn timeout_ms(t: Option<std::time::Duration>) -> i32 {
    match t {
        None => -1,
        Some(d) => {
            let ms = d.as_nanos().div_ceil(1_000_000);
            i32::try_from(ms).unwrap_or(i32::MAX)
        }
    }
}
