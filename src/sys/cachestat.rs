//! `cachestat(2)` (Linux 6.5+): whether a file range is in the page cache.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// `cachestat(2)` is missing or forbidden here: stop asking.
static NO_CACHESTAT: AtomicBool = AtomicBool::new(false);

/// `struct cachestat_range` (include/uapi/linux/mman.h).
#[repr(C)]
struct Range {
    off: u64,
    len: u64,
}

/// `struct cachestat`: only `nr_cache` is read.
#[repr(C)]
#[derive(Default)]
struct Stat {
    nr_cache: u64,
    rest: [u64; 4],
}

/// 451 on every architecture: cachestat was added (6.5, commit cf264e1329fb) after the
/// syscall tables were unified; libc 0.2 names it only for some targets.
const SYS_CACHESTAT: libc::c_long = 451;

/// Whether every page of `[off, off + len)` of a regular file is in the page cache, so a
/// read of it will not wait for the disk: one syscall for any range. `false` when unknown
/// (no cachestat: Linux before 6.5, a seccomp filter, a filesystem without it). A page
/// evicted between this call and the read makes that read wait after all; the window is
/// one syscall wide.
pub(crate) fn page_cached(fd: RawFd, off: u64, len: usize) -> bool {
    if len == 0 || NO_CACHESTAT.load(Relaxed) {
        return false;
    }
    let range = Range {
        off,
        len: len as u64,
    };
    let mut st = Stat::default();
    let (rp, sp) = (&range as *const Range, &mut st as *mut Stat);
    // SAFETY: both pointers are valid for the call; flags must be 0.
    let r = unsafe { libc::syscall(SYS_CACHESTAT, fd, rp, sp, 0 as libc::c_uint) };
    if r != 0 {
        let e = std::io::Error::last_os_error().raw_os_error();
        if matches!(e, Some(libc::ENOSYS) | Some(libc::EPERM)) {
            NO_CACHESTAT.store(true, Relaxed);
        }
        return false;
    }
    let page = super::basic::page_size() as u64;
    let pages = (off + len as u64).div_ceil(page) - off / page;
    st.nr_cache >= pages
}
