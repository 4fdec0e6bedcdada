//! `examples/mirror.rs` end to end, as its own process on both backends: clients relay
//! through it to an echo upstream while the mirror is healthy, down, stalled or resets.
//! Whatever the mirror does, every client gets back exactly what it sent; a healthy mirror
//! gets exactly what each client sent; the proxy exits cleanly on `SIGTERM`.
//!
//! The example binary is the one `cargo test` builds beside the test binaries
//! (`target/debug/examples/mirror`); `.ci/kernels` copies it next to them for the guests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use common::*;

/// What the example is run with: `auto` (io_uring where the kernel allows it) and the
/// fallback, through the operator's variable the example's `Engine::new()` honours.
const BACKENDS: [&str; 2] = ["auto", "fallback"];

/// `target/debug/examples/mirror` from `target/debug/deps/<test>`, or `examples/mirror`
/// beside the test binary where `.ci/kernels` puts it.
fn mirror_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("test binary's directory");
    let candidates = [dir.join("examples/mirror"), dir.join("../examples/mirror")];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!("no mirror example at {candidates:?}: `cargo test` builds it (run the test through cargo)")
        })
}

/// The example running as a child process, with what it wrote to stderr collected.
struct Proxy {
    child: Child,
    addr: SocketAddr,
    log: JoinHandle<String>,
}

impl Proxy {
    fn start(backend: &str, upstream: SocketAddr, mirror: SocketAddr, max_lag: u64) -> Proxy {
        let mut child = Command::new(mirror_exe())
            .args(["--listen", "127.0.0.1:0", "--verbose"])
            .args(["--upstream", &upstream.to_string()])
            .args(["--mirror", &mirror.to_string()])
            .args(["--max-lag", &max_lag.to_string()])
            .env("RINGSPLICE_BACKEND", backend)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn examples/mirror");
        let mut err = BufReader::new(child.stderr.take().expect("stderr"));
        let mut first = String::new();
        err.read_line(&mut first).expect("the example's first line");
        // "mirror: 127.0.0.1:PORT → upstream (copy to mirror)"
        let addr = first
            .strip_prefix("mirror: ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the example: {first:?}"));
        let log = read_in_thread("mirror-log", err, &first);
        Proxy { child, addr, log }
    }

    /// `SIGTERM`, then the exit status must be success; returns the example's log.
    fn stop(mut self) -> String {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: `pid` is our own child, not yet reaped (we still hold `self.child`).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = wait_child(&mut self.child, DROP_GUARD, "the mirror example on SIGTERM");
        let log = join(self.log, "mirror log");
        assert!(status.success(), "mirror example exited {status}:\n{log}");
        log
    }
}

/// An upstream that echoes each connection back and closes its write side at EOF.
fn echo_upstream() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
    let addr = l.local_addr().unwrap();
    spawn_named("echo-upstream", move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            spawn_named("echo-conn", move || {
                let mut w = s.try_clone().expect("clone");
                let _ = std::io::copy(&mut s, &mut w);
                let _ = w.shutdown(Shutdown::Write);
            });
        }
    });
    addr
}

/// How the mirror behaves.
#[derive(Clone, Copy, Debug)]
enum Mirror {
    /// Reads every connection to EOF and reports what it got.
    Healthy,
    /// Nothing listens at its address.
    Down,
    /// Accepts with a tiny receive buffer and never reads.
    Stalled,
    /// Reads 64 KiB, then resets the connection.
    Resets,
}

/// Starts a mirror of `kind`; what a healthy one received arrives on the receiver, one
/// `Vec` per connection.
fn start_mirror(kind: Mirror) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let l = TcpListener::bind("127.0.0.1:0").expect("bind mirror");
    let addr = l.local_addr().unwrap();
    match kind {
        Mirror::Down => {
            drop(l); // connects are refused from here on
            return (addr, rx);
        }
        Mirror::Stalled => set_rcvbuf(&l, 2048),
        Mirror::Healthy | Mirror::Resets => {}
    }
    spawn_named("mirror", move || {
        let mut held = Vec::new();
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            match kind {
                Mirror::Healthy => {
                    let tx = tx.clone();
                    spawn_named("mirror-conn", move || {
                        let mut got = Vec::new();
                        s.set_read_timeout(Some(HANG_GUARD)).unwrap();
                        let _ = s.read_to_end(&mut got);
                        let _ = tx.send(got);
                    });
                }
                Mirror::Stalled => held.push(s),
                Mirror::Resets => {
                    let mut buf = vec![0; 64 << 10];
                    let _ = s.read_exact(&mut buf);
                    set_linger_zero(&s);
                }
                Mirror::Down => unreachable!(),
            }
        }
    });
    (addr, rx)
}

/// One client: sends `payload`, half-closes, reads the echo to EOF.
fn client(addr: SocketAddr, payload: Vec<u8>) -> JoinHandle<Vec<u8>> {
    spawn_named("client", move || {
        let s = TcpStream::connect(addr).expect("connect to the mirror example");
        s.set_read_timeout(Some(HANG_GUARD)).unwrap();
        let mut w = s.try_clone().unwrap();
        let writer = spawn_named("client-writer", move || {
            w.write_all(&payload).expect("send to the proxy");
            w.shutdown(Shutdown::Write).expect("half-close");
        });
        let mut got = Vec::new();
        { &s }.read_to_end(&mut got).expect("read the echo");
        join(writer, "client writer");
        got
    })
}

/// Relays `conns` clients of `size` bytes each through the example on every backend, with
/// the mirror behaving as `kind`, and checks every byte on every side.
fn relay_with(kind: Mirror, conns: usize, size: usize, max_lag: u64) {
    for backend in BACKENDS {
        let what = format!("{backend}/{kind:?}");
        let upstream = echo_upstream();
        let (mirror, copies) = start_mirror(kind);
        let proxy = Proxy::start(backend, upstream, mirror, max_lag);
        let mut rng = Rng::for_test(&what);
        let payloads: Vec<Vec<u8>> = (0..conns).map(|_| rng.bytes(size)).collect();
        let clients: Vec<_> = payloads
            .iter()
            .map(|p| client(proxy.addr, p.clone()))
            .collect();
        for (i, (c, p)) in clients.into_iter().zip(&payloads).enumerate() {
            let got = join(c, &what);
            assert_same_bytes(&got, p, &format!("{what}: client {i}'s echo"));
        }
        if let Mirror::Healthy = kind {
            let mut want: Vec<u64> = payloads.iter().map(|p| checksum(p)).collect();
            let mut got: Vec<u64> = (0..conns)
                .map(|_| checksum(&copies.recv_timeout(HANG_GUARD).expect("a mirror copy")))
                .collect();
            want.sort_unstable();
            got.sort_unstable();
            assert_eq!(got, want, "{what}: the mirror's copies");
        }
        let log = proxy.stop();
        if let Mirror::Stalled | Mirror::Resets = kind {
            assert!(
                log.contains("mirror dropped"),
                "{what}: the mirror was never dropped:\n{log}"
            );
        }
    }
}

#[test]
fn a_healthy_mirror_gets_every_byte_each_client_sent() {
    relay_with(Mirror::Healthy, 3, 2 << 20, 4 << 20);
}

#[test]
fn a_mirror_that_is_down_changes_nothing_for_the_clients() {
    relay_with(Mirror::Down, 3, 2 << 20, 4 << 20);
}

#[test]
fn a_mirror_that_stops_reading_is_dropped_and_the_clients_finish() {
    // More than the mirror socket's buffers and the lag bound can hold, so it must be
    // dropped for the relay to finish.
    relay_with(Mirror::Stalled, 1, 16 << 20, 256 << 10);
}

#[test]
fn a_mirror_that_resets_mid_stream_changes_nothing_for_the_clients() {
    // More than the socket buffers between proxy and mirror hold, so the reset is seen.
    relay_with(Mirror::Resets, 2, 16 << 20, 4 << 20);
}
