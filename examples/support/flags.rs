//! Value parsers for the examples' and benchmarks' `argh` flags (`from_str_fn`).

// Each example includes this file as its own module and uses only some of it.
#![allow(dead_code)]

use std::fmt::Display;
use std::str::FromStr;

use ringsplice::Strategy;

/// A number above zero (`--conns 0` is refused, not run).
pub fn positive<T>(s: &str) -> Result<T, String>
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
pub fn strategy(s: &str) -> Result<Strategy, String> {
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
pub struct List<T>(pub Vec<T>);

impl<T> FromStr for List<T>
where
    T: FromStr,
    T::Err: Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split(',')
            .map(|v| v.parse().map_err(|e| format!("{v:?}: {e}")))
            .collect::<Result<_, _>>()
            .map(List)
    }
}
