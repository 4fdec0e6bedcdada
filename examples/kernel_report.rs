//! What ringsplice finds on this kernel: the backend `Auto` picks and why, and the kernel
//! features its guarantees depend on, one `key: value` line each. `.ci/kernels` runs it
//! in every guest for KERNEL_REQUIREMENTS.md's "verified on" table.
//!
//! ```text
//! cargo run --example kernel_report
//! ```

use std::io::Write;
use std::os::fd::AsRawFd;

use ringsplice::{Engine, Length, Strategy, Transfer};

/// `cachestat(2)` (Linux 6.5+) on a real file: lets `Auto` send cached file chunks inline.
fn has_cachestat() -> bool {
    let Ok(f) = std::fs::File::open("/proc/self/exe") else {
        return false;
    };
    let range = [0u64, 4096];
    let mut out = [0u64; 5];
    // SAFETY: cachestat(fd, *range, *cstat, flags) with valid pointers for the call; 451 on
    // every architecture.
    let r = unsafe { libc::syscall(451, f.as_raw_fd(), range.as_ptr(), out.as_mut_ptr(), 0) };
    r == 0
}

/// io-wq's exit-on-idle: workers of a thread with no ring left exit once idle.
fn has_iowq_exit_on_idle() -> bool {
    std::fs::read_to_string("/proc/kallsyms").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().nth(2) == Some("io_wq_set_exit_on_idle"))
    })
}

/// The strategy `Auto` runs a file → socket transfer on, told by the stats it leaves.
fn auto_file_to_socket(e: &mut Engine) -> std::io::Result<&'static str> {
    let (mut peer, sock) = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        let a = std::net::TcpStream::connect(l.local_addr()?)?;
        (a, l.accept()?.0)
    };
    let file = std::fs::File::open("/proc/self/exe")?;
    let before = e.stats();
    e.submit(
        Transfer::new(file, sock)
            .length(Length::Exact(1 << 16))
            .strategy(Strategy::Auto),
    )?;
    let reader = std::thread::spawn(move || std::io::copy(&mut peer, &mut std::io::sink()));
    let mut done = Vec::new();
    e.wait_all(&mut done, std::time::Duration::from_secs(30))?;
    drop(done);
    let _ = reader.join();
    let s = e.stats();
    Ok(if s.chain_rounds > before.chain_rounds {
        "io-wq fills, inline drains"
    } else {
        "inline sendfile (chunk cached)"
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut e = Engine::new()?;
    let uname = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "absent".into());
    let mut out = std::io::stdout().lock();
    writeln!(out, "kernel: {}", uname.trim())?;
    writeln!(out, "backend: {}", e.backend())?;
    writeln!(out, "reason: {}", e.backend_reason())?;
    writeln!(out, "io_uring_disabled: {disabled}")?;
    writeln!(out, "cachestat: {}", has_cachestat())?;
    writeln!(out, "iowq_exit_on_idle: {}", has_iowq_exit_on_idle())?;
    let file = auto_file_to_socket(&mut e)?;
    let (file, sockets) = match e.backend() {
        ringsplice::Backend::IoUring => (file, "POLL_ADD + inline splice(2)"),
        ringsplice::Backend::Fallback => ("inline sendfile(2)", "epoll + inline splice(2)"),
    };
    writeln!(out, "auto_file_to_socket: {file}")?;
    writeln!(out, "auto_socket_to_socket: {sockets}")?;
    Ok(())
}
