//! Value parsers for the examples' and benchmarks' `argh` flags (`from_str_fn`).

// Each example includes this file as its own module and uses only some of it.
#![allow(dead_code)]

use std::fmt::Display;
use std::str::FromStr;

use ringsplice::Strategy;

/// A number above zero (`--conns 0` is refused, not run).
pub(crate) fn positive<T>(s: &str) -> Result<T, String>
where
    T: FromStr + Default + PartialEq,
    T::Err: Display,
{
    let n: T = s.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if n == T::default() {
        return Err("must be positive".into());
    }
    Ok(n)
}

/// The names `--strategy` takes: `auto|chain|inline|copy`.
pub(crate) fn strategy(s: &str) -> Result<Strategy, String> {
    match s {
        "auto" => Ok(Strategy::Auto),
        "chain" => Ok(Strategy::Chain),
        "inline" => Ok(Strategy::Inline),
        "copy" => Ok(Strategy::Copy),
        other => Err(format!(
            "unknown strategy {other:?}: auto|chain|inline|copy"
        )),
    }
}

/// A comma-separated list, `--clients 1,32` (argh reads a `Vec` field as a flag given
/// several times instead).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct List<T>(pub Vec<T>);

impl<T> FromStr for List<T>
where
    T: FromStr,
    T::Err: Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|v| v.parse().map_err(|e: T::Err| e.to_string()))
            .collect::<Result<_, _>>()
            .map(List)
    }
}

/// This process's arguments less the `--bench` that `cargo bench` appends to a
/// `harness = false` bench's (argh would refuse it, even after `--help`).
pub(crate) fn bench_args() -> Vec<String> {
    std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect()
}

/// `args` parsed as `name`'s flags; on `--help` or an error, prints it and exits (0 or 1)
/// as `argh::from_env` does (which would name a bench by its hashed file name).
pub(crate) fn from_args_or_exit<T: argh::TopLevelCommand>(name: &str, args: &[String]) -> T {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    T::from_args(&[name], &args).unwrap_or_else(|exit| match exit.status {
        Ok(()) => {
            println!("{}", exit.output);
            std::process::exit(0)
        }
        Err(()) => {
            eprintln!("{}\nRun {name} --help for more information.", exit.output);
            std::process::exit(1)
        }
    })
}
