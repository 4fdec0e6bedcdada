//! The relay workload of the performance issue: clients → `examples/proxy` (a separate
//! process, on one engine) → sink, all on 127.0.0.1, beside the same load sent directly
//! client → sink in the same round.
//!
//! ```text
//! cargo bench --bench relay                   # 64 × 32 MiB, 1000 × 1 MiB, 1000 × 4 KiB
//! cargo bench --bench relay -- --conns 64 --mib 32 --rounds 5 --strace
//! cargo bench --bench relay -- --conns 1000 --kib 4       # connection churn
//! cargo bench --bench relay -- --proxy /path/to/proxy     # another build of the proxy
//! ```
//!
//! The relay under test is the proxy example, which this bench builds first (`cargo build
//! --release --example proxy`, a no-op when up to date) and runs from the same target
//! directory, unless `--proxy PATH` names one.
//!
//! For each workload it prints one row per relay: throughput, **tax** (throughput over the
//! direct run of the same round), the relay process's own CPU seconds per GB (user + system
//! of every thread of the proxy process, io-wq workers included, from `/proc/PID/stat`), its
//! context switches per GiB (summed over `/proc/PID/task/*/status` at the end of the load),
//! and, with `--strace`, syscalls and splices per GiB (`strace -f -c`; counts, not times,
//! are what it is read for: strace slows the relay down).
//!
//! The load generator is one client thread and one sink thread driven by mio, so it costs
//! the same for every row; the relay's figures are its own process's, not the generator's.

use std::collections::HashMap;
use std::error::Error;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[path = "../examples/support/listen.rs"]
mod listen;
use listen::listen_wide;

#[path = "../examples/support/flags.rs"]
mod flags;
#[path = "support/relay_load.rs"]
mod relay_load;
use flags::List;
use relay_load::{load, median, process_cpu_secs};

type BoxResult<T> = Result<T, Box<dyn Error>>;

/// The relay workload: clients -> examples/proxy (its own process) -> sink on 127.0.0.1,
/// beside the same load sent directly client -> sink in the same round.
#[derive(argh::FromArgs)]
#[argh(help_triggers("-h", "--help"))]
struct Args {
    /// connections of the one workload to run (default: three workloads, 64 x 32 MiB,
    /// 1000 x 1 MiB and 1000 x 4 KiB; with only --mib or --kib, 64)
    #[argh(option, from_str_fn(flags::positive))]
    conns: Option<usize>,
    /// size of each connection's load in MiB (default 32 when --conns is given)
    #[argh(option, from_str_fn(flags::positive))]
    mib: Option<u64>,
    /// size of each connection's load in KiB, instead of --mib
    #[argh(option, from_str_fn(flags::positive))]
    kib: Option<u64>,
    /// rounds; the table shows medians (default 3)
    #[argh(option, default = "3", from_str_fn(flags::positive))]
    rounds: usize,
    /// count each relay run's syscalls with strace -f -c (slows the relay down)
    #[argh(switch)]
    strace: bool,
    /// record a perf record -e cpu-clock -g profile of each relay run (kept in /tmp)
    #[argh(switch)]
    perf: bool,
    /// relays to run, BACKEND[:STRATEGY[:THREADS]],...: backend io-uring|fallback, strategy
    /// one of the proxy's --strategy values, threads the proxy's --threads (default
    /// io-uring,fallback)
    #[argh(
        option,
        default = "List(vec![\"io-uring\".into(), \"fallback\".into()])",
        from_str_fn(relay_list)
    )]
    relays: List<String>,
    /// the proxy binary to measure (default: the proxy example, built now if stale)
    #[argh(option)]
    proxy: Option<PathBuf>,
}

impl Args {
    /// `(connections, bytes each)`.
    fn workloads(&self) -> BoxResult<Vec<(usize, u64)>> {
        let defaults = [(64, 32 << 20), (1000, 1 << 20), (1000, 4 << 10)];
        relay_load::workloads(self.conns, self.mib, self.kib, &defaults)
    }
}

/// `--relays`: each `BACKEND[:STRATEGY]` checked here, so a typo fails before any run.
fn relay_list(s: &str) -> Result<List<String>, String> {
    let relays: List<String> = s.parse()?;
    for r in &relays.0 {
        let (backend, strategy, threads) = relay_spec(r);
        if !matches!(backend, "io-uring" | "fallback") {
            return Err(format!("bad relay {r:?}: backend io-uring|fallback"));
        }
        flags::strategy(strategy).map_err(|e| format!("bad relay {r:?}: {e}"))?;
        flags::positive::<usize>(threads).map_err(|e| format!("bad relay {r:?}: threads {e}"))?;
    }
    Ok(relays)
}

/// `BACKEND[:STRATEGY[:THREADS]]` as (backend, strategy, threads): strategy `auto` and one
/// thread unless given.
fn relay_spec(r: &str) -> (&str, &str, &str) {
    let mut it = r.splitn(3, ':');
    let backend = it.next().unwrap_or(r);
    (
        backend,
        it.next().unwrap_or("auto"),
        it.next().unwrap_or("1"),
    )
}

/// Context switches (voluntary + involuntary) summed over the process's live threads.
fn context_switches(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    let mut n = 0;
    for t in dir.flatten() {
        let Ok(s) = std::fs::read_to_string(t.path().join("status")) else {
            continue;
        };
        for line in s.lines() {
            if let Some(v) = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
            {
                n += v.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    n
}

/// The relay under test: `--proxy PATH`, or else the proxy example, built now (`cargo
/// build --release --example proxy`, a no-op when it is up to date, so a bench run never
/// measures a proxy older than the engine it was built with) and taken from the target
/// directory this bench runs from: `target/release/deps/relay-HASH` →
/// `target/release/examples/proxy`.
fn proxy_binary(given: Option<&Path>) -> BoxResult<PathBuf> {
    if let Some(p) = given {
        if !p.is_file() {
            return Err(format!("--proxy {}: no such file", p.display()).into());
        }
        return Ok(p.to_path_buf());
    }
    let me = std::env::current_exe()?;
    let profile_dir = me
        .parent()
        .and_then(Path::parent)
        .ok_or("cannot tell the target directory; pass --proxy PATH")?;
    let p = profile_dir.join("examples").join("proxy");
    // The cargo that runs this bench (`cargo bench`), else the one that built it.
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut build = Command::new(cargo);
    build.args(["build", "--example", "proxy", "--manifest-path"]);
    build.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"));
    if !cfg!(debug_assertions) {
        build.arg("--release");
    }
    eprintln!("building the relay under test: {build:?}");
    if !build.status()?.success() {
        return Err("could not build examples/proxy".into());
    }
    if !p.is_file() {
        return Err(format!("built, but no proxy at {}: pass --proxy PATH", p.display()).into());
    }
    Ok(p)
}

struct Relay {
    child: Child,
    /// The proxy's own pid (under `--strace`, the child is strace and the proxy its child).
    pid: u32,
    addr: SocketAddr,
    out: BufReader<std::process::ChildStdout>,
    strace_file: Option<PathBuf>,
    perf_file: Option<PathBuf>,
}

fn start_relay(
    bin: &Path,
    relay: &str,
    upstream: SocketAddr,
    args: &Args,
    tag: &str,
) -> BoxResult<Relay> {
    let (backend, strategy, threads) = relay_spec(relay);
    let strace_file = args
        .strace
        .then(|| std::env::temp_dir().join(format!("relay_bench-{tag}.strace")));
    let wrapped = strace_file.is_some() || args.perf;
    let perf_file = (args.perf && strace_file.is_none())
        .then(|| std::env::temp_dir().join(format!("relay_bench-{tag}.perf.data")));
    let mut cmd = match &strace_file {
        Some(f) => {
            let mut c = Command::new("strace");
            c.arg("-f").arg("-c").arg("-o").arg(f).arg(bin);
            c
        }
        None if args.perf => {
            let data = perf_file.clone().ok_or("perf file")?;
            eprintln!("perf profile: {}", data.display());
            let mut c = Command::new("perf");
            c.args(["record", "-q", "-e", "cpu-clock", "-F", "2999", "-g", "-o"])
                .arg(data)
                .arg("--")
                .arg(bin);
            c
        }
        None => Command::new(bin),
    };
    let mut child = cmd
        .args([
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &upstream.to_string(),
        ])
        .args(["--max-conns", "20000", "--strategy", strategy])
        .args(["--threads", threads])
        .env("RINGSPLICE_BACKEND", backend)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = BufReader::new(child.stdout.take().ok_or("no stdout")?);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        if out.read_line(&mut line)? == 0 {
            return Err("the proxy exited before listening".into());
        }
        // "proxy: 127.0.0.1:PORT -> UPSTREAM on N thread(s) (Ctrl-C to stop)"
        if let Some(rest) = line.strip_prefix("proxy: ") {
            let a = rest.split_whitespace().next().ok_or("bad proxy line")?;
            break a.parse()?;
        }
    };
    let pid = if wrapped {
        // The proxy is listening, so strace (or perf) has forked it already.
        let f = format!("/proc/{0}/task/{0}/children", child.id());
        std::fs::read_to_string(f)?
            .split_whitespace()
            .next()
            .ok_or("strace has no child")?
            .parse()?
    } else {
        child.id()
    };
    Ok(Relay {
        child,
        pid,
        addr,
        out,
        strace_file,
        perf_file,
    })
}

/// SIGTERM, then the proxy's last lines (its Stats), and the strace summary if any.
fn stop_relay(mut r: Relay) -> BoxResult<(String, Option<(u64, u64)>)> {
    // SAFETY: kill with a pid we spawned and a valid signal.
    unsafe { libc::kill(r.pid as libc::pid_t, libc::SIGTERM) };
    let mut rest = String::new();
    r.out.read_to_string(&mut rest)?;
    r.child.wait()?;
    let stats = rest
        .lines()
        .find(|l| l.starts_with("stats"))
        .unwrap_or("")
        .to_string();
    if let Some(f) = &r.perf_file {
        eprintln!("profile {}: {}", f.display(), perf_summary(f)?);
    }
    let calls = match &r.strace_file {
        Some(f) => {
            let text = std::fs::read_to_string(f)?;
            let _ = std::fs::remove_file(f);
            // Last column is the syscall name, fourth the call count; the "total" line last.
            let mut total = 0;
            let mut splices = 0;
            let mut by_call = Vec::new();
            for l in text.lines() {
                let cols: Vec<&str> = l.split_whitespace().collect();
                if cols.len() < 5 {
                    continue;
                }
                let name = cols[cols.len() - 1];
                let count = cols[3].parse::<u64>().unwrap_or(0);
                if name == "total" {
                    total = count;
                } else if name == "splice" {
                    splices = count;
                }
                if name != "total" && count > 0 {
                    by_call.push((count, name.to_string()));
                }
            }
            by_call.sort_by(|a, b| b.cmp(a));
            let top: Vec<String> = by_call
                .iter()
                .take(8)
                .map(|(c, n)| format!("{n} {c}"))
                .collect();
            eprintln!("strace {}: {}", f.display(), top.join(", "));
            Some((total, splices))
        }
        None => None,
    };
    Ok((stats, calls))
}

/// Where the proxy's CPU went, from a `perf record -g` profile: the share of samples under
/// each syscall's entry point (children included, so the TCP/IP work a splice does counts
/// in splice), io_uring's task work, and user space's own share.
fn perf_summary(data: &std::path::Path) -> BoxResult<String> {
    let out = Command::new("perf")
        .args([
            "report",
            "--children",
            "--sort",
            "sym",
            "--stdio",
            "-g",
            "none",
            "-i",
        ])
        .arg(data)
        .stderr(Stdio::null())
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut children: HashMap<String, f64> = HashMap::new();
    let mut user_self = 0.0;
    for l in text.lines() {
        // "    68.09%     0.00%  [k] __x64_sys_splice"
        let cols: Vec<&str> = l.split_whitespace().collect();
        if cols.len() < 4 || cols[0].starts_with('#') {
            continue;
        }
        let (Some(c), Some(s)) = (
            cols[0]
                .strip_suffix('%')
                .and_then(|v| v.parse::<f64>().ok()),
            cols[1]
                .strip_suffix('%')
                .and_then(|v| v.parse::<f64>().ok()),
        ) else {
            continue;
        };
        if cols[2] == "[.]" {
            user_self += s;
        }
        children.insert(cols[3..].join(" "), c);
    }
    let get = |names: &[&str]| {
        names
            .iter()
            .map(|n| children.get(*n).unwrap_or(&0.0))
            .sum::<f64>()
    };
    let parts = [
        ("splice(2)", get(&["__x64_sys_splice"])),
        ("io_uring_enter", get(&["__x64_sys_io_uring_enter"])),
        (
            "epoll",
            get(&["__x64_sys_epoll_wait", "__x64_sys_epoll_ctl"]),
        ),
        (
            "poll+read+write",
            get(&["__x64_sys_poll", "__x64_sys_read", "__x64_sys_write"]),
        ),
        (
            "sendto/recvfrom",
            get(&["__x64_sys_sendto", "__x64_sys_recvfrom"]),
        ),
        (
            "conn setup/teardown",
            get(&[
                "__x64_sys_accept4",
                "__x64_sys_connect",
                "__x64_sys_socket",
                "__x64_sys_close",
                "__x64_sys_shutdown",
                "__x64_sys_ioctl",
                "__x64_sys_fcntl",
                "__x64_sys_newfstatat",
                "__x64_sys_getsockopt",
                "__x64_sys_setsockopt",
            ]),
        ),
        // Task work (io_uring's poll completions) runs on the way out of a syscall or an
        // interrupt: it overlaps the syscall shares above.
        ("task_work_run", get(&["task_work_run"])),
        ("all syscalls", get(&["do_syscall_64"])),
        ("user space (self)", user_self),
    ];
    Ok(parts
        .iter()
        .map(|(n, v)| format!("{n} {v:.1}%"))
        .collect::<Vec<_>>()
        .join(", "))
}

#[derive(Clone, Default)]
struct Row {
    gbps: Vec<f64>,
    tax: Vec<f64>,
    cpu_per_gb: Vec<f64>,
    cpu_secs: Vec<f64>,
    csw_per_gib: Vec<f64>,
    calls_per_gib: Vec<f64>,
    splices_per_gib: Vec<f64>,
    stats: String,
}

fn main() -> BoxResult<()> {
    let args: Args = flags::from_args_or_exit("relay", &flags::bench_args());
    let workloads = args.workloads()?;
    if args.strace && Command::new("strace").arg("-V").output().is_err() {
        return Err("--strace needs strace (apt-get install strace)".into());
    }
    if args.strace && args.perf {
        return Err("--strace and --perf exclude each other".into());
    }
    let proxy = proxy_binary(args.proxy.as_deref())?;
    eprintln!("relay under test: {}", proxy.display());
    let relays: Vec<(&str, String)> = args
        .relays
        .0
        .iter()
        .map(|r| (r.as_str(), r.replace("io-uring", "io_uring")))
        .collect();
    for &(n, bytes) in &workloads {
        let size = if bytes >= 1 << 20 && bytes % (1 << 20) == 0 {
            format!("{} MiB", bytes >> 20)
        } else {
            format!("{} KiB", bytes as f64 / 1024.0)
        };
        let total = n as u64 * bytes;
        let gib = total as f64 / (1u64 << 30) as f64;
        let mut direct = Vec::new();
        let mut rows: Vec<Row> = vec![Row::default(); relays.len()];
        for round in 0..args.rounds {
            let l = listen_wide("127.0.0.1:0".parse()?)?;
            let a = l.local_addr()?;
            let d = total as f64 / 1e9 / load(l, a, n, bytes)?;
            direct.push(d);
            for (i, (backend, name)) in relays.iter().enumerate() {
                let l = listen_wide("127.0.0.1:0".parse()?)?;
                let upstream = l.local_addr()?;
                let relay =
                    start_relay(&proxy, backend, upstream, &args, &format!("{name}-{round}"))?;
                let pid = relay.pid;
                let cpu0 = process_cpu_secs(pid)?;
                let secs = load(l, relay.addr, n, bytes)?;
                let cpu = process_cpu_secs(pid)? - cpu0;
                let csw = context_switches(pid);
                let (stats, calls) = stop_relay(relay)?;
                let gbps = total as f64 / 1e9 / secs;
                let r = &mut rows[i];
                r.gbps.push(gbps);
                r.tax.push(gbps / d);
                r.cpu_per_gb.push(cpu / (total as f64 / 1e9));
                r.cpu_secs.push(cpu);
                r.csw_per_gib.push(csw as f64 / gib);
                if let Some((c, s)) = calls {
                    r.calls_per_gib.push(c as f64 / gib);
                    r.splices_per_gib.push(s as f64 / gib);
                }
                r.stats = stats;
                let _ = name;
            }
        }
        println!(
            "\n{n} connections x {size} through examples/proxy, medians of {} rounds \
             (direct client->sink: {:.2} GB/s)",
            args.rounds,
            median(&direct)
        );
        println!(
            "{:<16} {:>6} {:>6} {:>9} {:>7} {:>11} {:>11} {:>11}",
            "relay", "GB/s", "tax", "CPU-s/GB", "CPU-s", "ctxsw/GiB", "calls/GiB", "splice/GiB"
        );
        for (r, (_, name)) in rows.iter().zip(&relays) {
            println!(
                "{:<16} {:>6.2} {:>6.2} {:>9.3} {:>7.3} {:>11.0} {:>11.0} {:>11.0}",
                name,
                median(&r.gbps),
                median(&r.tax),
                median(&r.cpu_per_gb),
                median(&r.cpu_secs),
                median(&r.csw_per_gib),
                median(&r.calls_per_gib),
                median(&r.splices_per_gib),
            );
        }
        if let Some(f) = relays.iter().position(|r| r.0 == "fallback") {
            for (r, (relay, name)) in rows.iter().zip(&relays) {
                if relay.starts_with("io-uring") {
                    let ratio = median(&r.cpu_per_gb) / median(&rows[f].cpu_per_gb);
                    println!("{name} CPU per GB / fallback CPU per GB (same rounds): {ratio:.2}");
                }
            }
        }
        for (r, (_, name)) in rows.iter().zip(&relays) {
            println!("{name} (last round) {}", r.stats);
        }
    }
    Ok(())
}
