//! One TCP source → N TCP sinks on 127.0.0.1: a ringsplice fan-out (`tee(2)`) against a
//! read-once/write-N user-space fan-out, in the same run. Reports throughput and the CPU
//! of the thread doing the fan-out (`getrusage(RUSAGE_THREAD)`), per GB moved from the
//! source (each GB reaches every sink).
//!
//! ```text
//! cargo bench --bench fan_out                      # 1 GiB, 4 and 16 sinks, 3 rounds
//! cargo bench --bench fan_out -- --mib 256 --sinks 4 --rounds 1
//! ```

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use argh::FromArgs;
use ringsplice::{Engine, FanOut, Length, Policy};

#[path = "../examples/support/flags.rs"]
mod flags;

#[derive(FromArgs)]
/// Fan-out benchmark: ringsplice tee against user-space read-once/write-N.
struct Args {
    /// mebibytes taken from the source per run (default 1024)
    #[argh(option, default = "1024", from_str_fn(flags::positive))]
    mib: u64,
    /// sink counts, comma-separated (default 4,16)
    #[argh(option, default = "flags::List(vec![4, 16])")]
    sinks: flags::List<usize>,
    /// rounds of each (default 3; medians printed)
    #[argh(option, default = "3", from_str_fn(flags::positive))]
    rounds: usize,
    /// ignored (cargo bench passes it)
    #[argh(switch)]
    #[allow(dead_code)] // accepted so that `cargo bench` can pass it
    bench: bool,
}

fn pair(l: &TcpListener) -> (TcpStream, TcpStream) {
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Source writer and sink readers; returns (source's engine end, sinks' far ends, joins).
fn setup(n: usize, bytes: u64) -> (TcpStream, Vec<TcpStream>, Vec<thread::JoinHandle<u64>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let (mut w, src) = pair(&l);
    let mut joins = vec![thread::spawn(move || {
        let buf = vec![0x5au8; 1 << 20];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            w.write_all(&buf[..n]).unwrap();
            left -= n as u64;
        }
        bytes
    })];
    let mut near = Vec::new();
    for _ in 0..n {
        let (mut r, s) = pair(&l);
        near.push(s);
        joins.push(thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let mut got = 0u64;
            loop {
                match r.read(&mut buf) {
                    Ok(0) | Err(_) => return got,
                    Ok(k) => got += k as u64,
                }
            }
        }));
    }
    (src, near, joins)
}

fn run_engine(n: usize, bytes: u64) -> (Duration, Duration) {
    let (src, sinks, joins) = setup(n, bytes);
    let (t0, c0) = (Instant::now(), thread_cpu());
    let mut e = Engine::new().unwrap();
    let mut f = FanOut::new(src).length(Length::Exact(bytes));
    for s in sinks {
        f = f.destination(s, Policy::Required);
    }
    e.submit_fan_out(f).unwrap();
    let mut done = Vec::new();
    e.wait_all(&mut done, Duration::from_secs(600)).unwrap();
    let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
    assert!(done[0].is_ok(), "{:?}", done[0].result);
    drop(done);
    for j in joins {
        assert_eq!(j.join().unwrap(), bytes);
    }
    (wall, cpu)
}

fn run_user_space(n: usize, bytes: u64) -> (Duration, Duration) {
    let (mut src, mut sinks, joins) = setup(n, bytes);
    let (t0, c0) = (Instant::now(), thread_cpu());
    let mut buf = vec![0u8; 256 << 10];
    let mut left = bytes;
    while left > 0 {
        let k = src.read(&mut buf[..left.min(256 << 10) as usize]).unwrap();
        assert!(k > 0, "source ended early");
        for s in &mut sinks {
            s.write_all(&buf[..k]).unwrap();
        }
        left -= k as u64;
    }
    let (wall, cpu) = (t0.elapsed(), thread_cpu() - c0);
    drop(sinks);
    for j in joins {
        assert_eq!(j.join().unwrap(), bytes);
    }
    (wall, cpu)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let args: Args = argh::from_env();
    let bytes = args.mib << 20;
    let gb = bytes as f64 / 1e9;
    println!("source GB per run: {gb:.3}; CPU = the fan-out thread's user+system time");
    println!("sinks  method                      GB/s(source)  CPU-s/GB  engine/user CPU");
    for &n in &args.sinks.0 {
        let (mut ew, mut ec, mut uw, mut uc) = (vec![], vec![], vec![], vec![]);
        for _ in 0..args.rounds {
            let (w, c) = run_engine(n, bytes);
            ew.push(gb / w.as_secs_f64());
            ec.push(c.as_secs_f64() / gb);
            let (w, c) = run_user_space(n, bytes);
            uw.push(gb / w.as_secs_f64());
            uc.push(c.as_secs_f64() / gb);
        }
        let ratio = median(ec.clone()) / median(uc.clone());
        println!(
            "{n:>5}  ringsplice fan-out (tee)    {:>12.3}  {:>8.3}  {ratio:.2}",
            median(ew),
            median(ec)
        );
        println!(
            "{n:>5}  user space read/write N     {:>12.3}  {:>8.3}",
            median(uw),
            median(uc)
        );
    }
}
