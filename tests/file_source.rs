//! File → socket under `Strategy::Auto` on io_uring: chunks in the page cache are spliced
//! inline (no io-wq round), chunks that are not go to an io-wq worker as single fills
//! (`Stats::chain_rounds`), and the bytes arrive intact either way. The fallback reads
//! inline whatever the cache holds (`sendfile`), so there the same transfers just have to
//! arrive intact.

mod common;

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use common::{Config, Rng};
use ringsplice::{BackendPreference, Length, Stats, Strategy};

const LEN: usize = 8 << 20;

/// A file on the disk the tests are built on (not a tmpfs, whose pages cannot be dropped),
/// removed on drop.
struct DiskFile(PathBuf);

impl DiskFile {
    fn new(tag: &str, data: &[u8]) -> DiskFile {
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("file_source-{}-{tag}", std::process::id()));
        let mut f = File::create(&path).unwrap();
        f.write_all(data).unwrap();
        f.sync_all().unwrap();
        DiskFile(path)
    }

    /// Drops the file's pages from the page cache; returns how many of its pages are
    /// still resident afterwards (`mincore`), since a filesystem may keep them.
    fn drop_cache(&self) -> usize {
        let f = File::open(&self.0).unwrap();
        // SAFETY: a valid fd; the advice only affects caching.
        let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(r, 0, "posix_fadvise");
        resident_pages(&f)
    }
}

impl Drop for DiskFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Pages of `f` in the page cache, by `mmap` + `mincore`.
fn resident_pages(f: &File) -> usize {
    let len = f.metadata().unwrap().len() as usize;
    // SAFETY: a shared read-only mapping of an open file of `len` bytes; unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "mmap");
    let pages = len.div_ceil(4096);
    let mut vec = vec![0u8; pages];
    // SAFETY: `vec` has one byte per page of the mapping.
    let r = unsafe { libc::mincore(p, len, vec.as_mut_ptr()) };
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(p, len) };
    assert_eq!(r, 0, "mincore");
    vec.iter().filter(|b| *b & 1 != 0).count()
}

/// Whether this kernel has `cachestat(2)` (Linux 6.5+), the engine's way to tell a cached
/// chunk from a cold one: asked of a real file, `ENOSYS` (or a seccomp refusal) means no.
/// Without it the engine cannot know a chunk is cached, so under `Auto` on io_uring every
/// chunk goes to io-wq, warm or cold: the rule these tests check on every kernel.
fn has_cachestat(file: &DiskFile) -> bool {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    let f = File::open(&file.0).unwrap();
    let range = Range { off: 0, len: 4096 };
    let mut out = [0u64; 5];
    // SAFETY: cachestat(fd, *range, *cstat, flags): both pointers are valid for the call.
    let r = unsafe {
        libc::syscall(
            451, // cachestat: the same number on every architecture (Linux 6.5)
            f.as_raw_fd(),
            &range as *const Range,
            out.as_mut_ptr(),
            0,
        )
    };
    let on = r == 0;
    if !on {
        common::say(&format!(
            "note: cachestat unavailable ({}): warm chunks go to io-wq too",
            std::io::Error::last_os_error()
        ));
    }
    on
}

/// Sends the file to a socket under `cfg`; checks every byte; returns the stats.
fn send(cfg: Config, file: &DiskFile, want: &[u8]) -> Stats {
    let mut e = cfg.engine();
    let (dst, sink) = common::tcp_pair();
    let reader = common::spawn_reader(common::Peer::Tcp(sink));
    let t = cfg
        .transfer(File::open(&file.0).unwrap(), dst)
        .length(Length::Exact(want.len() as u64))
        .source_offset(0);
    e.submit(t).unwrap();
    let c = common::wait_one(&mut e, "file to socket");
    assert!(c.is_ok(), "[{cfg}] {:?}", c.result);
    assert_eq!(c.delivered, want.len() as u64);
    let stats = e.stats();
    drop(c);
    let got = common::join(reader, "reader").unwrap();
    assert!(got == want, "[{cfg}] payload differs");
    stats
}

#[test]
fn cached_chunks_run_inline_and_cold_ones_on_io_wq() {
    let _g = common::serial();
    let data = Rng::new(3).bytes(LEN);
    let file = DiskFile::new("auto", &data);
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        // Warm: read it once, so every page is cached.
        std::fs::read(&file.0).unwrap();
        let warm = send(cfg, &file, &data);
        if cfg.backend == BackendPreference::IoUring && has_cachestat(&file) {
            assert_eq!(
                warm.chain_rounds, 0,
                "[{cfg}] warm file went to io-wq: {warm:?}"
            );
            assert!(warm.inline_calls > 0, "[{cfg}] {warm:?}");
        } else if cfg.backend == BackendPreference::IoUring {
            assert!(
                warm.chain_rounds > 0,
                "[{cfg}] without cachestat a chunk was sent inline: {warm:?}"
            );
        }
        // Cold: drop its pages first.
        let resident = file.drop_cache();
        if resident > LEN / 4096 / 2 {
            common::skip(format_args!(
                "[{cfg}] the cold half: {resident} of {} pages stayed in the page cache after \
                 POSIX_FADV_DONTNEED (this filesystem keeps them)",
                LEN / 4096
            ));
            return;
        }
        let cold = send(cfg, &file, &data);
        if cfg.backend == BackendPreference::IoUring {
            assert!(
                cold.chain_rounds > 0,
                "[{cfg}] cold file read inline: {cold:?}"
            );
        }
    });
}

/// `Strategy::Chain` keeps every fill and drain on io-wq, warm or cold.
#[test]
fn chain_strategy_still_chains_file_sources() {
    let _g = common::serial();
    let data = Rng::new(4).bytes(LEN);
    let file = DiskFile::new("chain", &data);
    common::run_configs(&common::configs(&[Strategy::Chain]), |cfg| {
        std::fs::read(&file.0).unwrap();
        let s = send(cfg, &file, &data);
        if cfg.backend == BackendPreference::IoUring {
            assert!(s.chain_rounds > 0, "[{cfg}] {s:?}");
            assert_eq!(s.inline_calls, 0, "[{cfg}] {s:?}");
        }
    });
}

/// Without `source_offset` the file's own position is read from and advanced, cached or
/// not, on every backend.
#[test]
fn file_position_is_used_and_advanced_without_an_offset() {
    use std::io::{Seek, SeekFrom};
    let _g = common::serial();
    let data = Rng::new(5).bytes(LEN);
    let file = DiskFile::new("pos", &data);
    let skip = 1 << 20;
    common::run_configs(&common::configs(&[Strategy::Auto]), |cfg| {
        for cold in [false, true] {
            if cold {
                file.drop_cache();
            } else {
                std::fs::read(&file.0).unwrap();
            }
            let mut e = cfg.engine();
            let (dst, sink) = common::tcp_pair();
            let reader = common::spawn_reader(common::Peer::Tcp(sink));
            let mut f = File::open(&file.0).unwrap();
            f.seek(SeekFrom::Start(skip)).unwrap();
            let want = &data[skip as usize..];
            let t = cfg
                .transfer(f, dst)
                .length(Length::Exact(want.len() as u64));
            e.submit(t).unwrap();
            let c = common::wait_one(&mut e, "file position");
            assert!(c.is_ok(), "[{cfg}] cold {cold}: {:?}", c.result);
            assert_eq!(c.delivered, want.len() as u64);
            let stats = e.stats();
            let mut f = File::from(c.source.into_owned_fd().unwrap());
            assert_eq!(
                f.stream_position().unwrap(),
                LEN as u64,
                "[{cfg}] cold {cold}"
            );
            drop(c.destination);
            let got = common::join(reader, "reader").unwrap();
            assert!(got == want, "[{cfg}] cold {cold}: payload differs");
            if cfg.backend == BackendPreference::IoUring && !cold {
                if has_cachestat(&file) {
                    assert_eq!(
                        stats.chain_rounds, 0,
                        "[{cfg}] warm went to io-wq: {stats:?}"
                    );
                } else {
                    assert!(
                        stats.chain_rounds > 0,
                        "[{cfg}] without cachestat a chunk was sent inline: {stats:?}"
                    );
                }
            }
        }
    });
}
