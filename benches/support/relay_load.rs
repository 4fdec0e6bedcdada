//! The relay benchmarks' load: `n` clients writing through a relay into one sink, all on
//! 127.0.0.1, driven by mio on one thread each so the load costs the same for every relay;
//! and the CPU a relay process used. Shared by benches/relay.rs and benches/tokio_relay.rs.

// Each bench includes this file as its own module and uses only some of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::error::Error;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// The sink: accepts `n` connections and reads each to end of file. Returns when all have
/// ended, with the bytes read.
pub(crate) fn sink(listener: TcpListener, n: usize) -> io::Result<u64> {
    listener.set_nonblocking(true)?;
    let mut listener = mio::net::TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    const LISTEN: Token = Token(usize::MAX);
    poll.registry()
        .register(&mut listener, LISTEN, Interest::READABLE)?;
    let mut conns: HashMap<usize, TcpStream> = HashMap::new();
    let (mut accepted, mut ended, mut total) = (0, 0, 0u64);
    let mut buf = vec![0u8; 1 << 20];
    while ended < n {
        poll.poll(&mut events, Some(Duration::from_secs(30)))?;
        if events.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "sink: no progress for 30 s",
            ));
        }
        for ev in events.iter() {
            if ev.token() == LISTEN {
                loop {
                    match listener.accept() {
                        Ok((mut s, _)) => {
                            poll.registry().register(
                                &mut s,
                                Token(accepted),
                                Interest::READABLE,
                            )?;
                            conns.insert(accepted, s);
                            accepted += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let id = ev.token().0;
            let Some(s) = conns.get_mut(&id) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        conns.remove(&id); // closing passes the end back through the relay
                        ended += 1;
                        break;
                    }
                    Ok(k) => total += k as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(total)
}

/// The clients: `n` connections to `to`, each writes `bytes` then half-closes. Returns when
/// every byte is written.
pub(crate) fn clients(to: SocketAddr, n: usize, bytes: u64) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = TcpStream::connect(to)?;
        poll.registry()
            .register(&mut s, Token(i), Interest::WRITABLE)?;
        conns.push(Some((s, 0u64)));
    }
    let buf = vec![0x5Au8; 256 << 10];
    let mut left = n;
    while left > 0 {
        poll.poll(&mut events, Some(Duration::from_secs(30)))?;
        if events.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "clients: stuck for 30 s",
            ));
        }
        for ev in events.iter() {
            let i = ev.token().0;
            let Some((s, sent)) = conns[i].as_mut() else {
                continue;
            };
            loop {
                let k = (bytes - *sent).min(buf.len() as u64) as usize;
                if k == 0 {
                    s.shutdown(Shutdown::Write)?;
                    // Kept open (not dropped) until the end: the relay closes it.
                    left -= 1;
                    poll.registry().deregister(s)?;
                    break;
                }
                match s.write(&buf[..k]) {
                    Ok(w) => *sent += w as u64,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => break, // still connecting
                    Err(e) => return Err(e),
                }
            }
        }
    }
    drop(conns);
    Ok(())
}

/// Clock ticks of CPU (user + system) the whole process has used.
pub(crate) fn process_cpu_secs(pid: u32) -> io::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').ok_or(io::ErrorKind::InvalidData)? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(ticks / hz)
}

/// One run of the load through `to` (the sink, or a relay in front of it).
pub(crate) fn load(
    sink_listener: TcpListener,
    to: SocketAddr,
    n: usize,
    bytes: u64,
) -> BoxResult<f64> {
    let t0 = Instant::now();
    let s = std::thread::spawn(move || sink(sink_listener, n));
    clients(to, n, bytes)?;
    let got = s.join().map_err(|_| "sink thread panicked")??;
    let secs = t0.elapsed().as_secs_f64();
    if got != n as u64 * bytes {
        return Err(format!("sink got {got} bytes of {}", n as u64 * bytes).into());
    }
    Ok(secs)
}

pub(crate) fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The workloads `(connections, bytes each)` that `--conns`, `--mib` and `--kib` ask for:
/// `defaults` when none is given; otherwise one workload, 64 connections and 32 MiB each
/// unless said.
pub(crate) fn workloads(
    conns: Option<usize>,
    mib: Option<u64>,
    kib: Option<u64>,
    defaults: &[(usize, u64)],
) -> BoxResult<Vec<(usize, u64)>> {
    let bytes = match (mib, kib) {
        (Some(_), Some(_)) => return Err("--mib and --kib exclude each other".into()),
        (Some(m), None) => Some(m << 20),
        (None, Some(k)) => Some(k << 10),
        (None, None) => None,
    };
    Ok(match (conns, bytes) {
        (None, None) => defaults.to_vec(),
        (c, b) => vec![(c.unwrap_or(64), b.unwrap_or(32 << 20))],
    })
}
