//! The argument parsers and checks shared by the commands.
//!
//! Parsers (`parse_*`) run inside clap, so a bad value is a usage error
//! with clap's message and exit status 2; checks run before any work and
//! return [`Error::Argument`], which exits 2 too.

use std::path::Path;

use prunus_core::NofM;

use crate::error::Error;

/// A sparsity in `[0, 1]`, with core's message otherwise.
pub(crate) fn parse_sparsity(s: &str) -> Result<f64, String> {
    let value: f64 = s.trim().parse().map_err(|_| {
        format!("'{s}' is not a number; give the fraction of weights to remove, e.g. 0.9")
    })?;
    if !(0.0..=1.0).contains(&value) {
        return Err(prunus_core::Error::SparsityOutOfRange { value }.to_string());
    }
    Ok(value)
}

/// A fraction in `[0, 1]` (a density).
pub(crate) fn parse_fraction(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("'{s}' is not a number"))?;
    if !(0.0..=1.0).contains(&v) {
        return Err(format!("{v} is not a fraction in [0, 1]"));
    }
    Ok(v)
}

/// `N:M` with `0 < N < M`.
pub(crate) fn parse_pattern(s: &str) -> Result<NofM, String> {
    let bad = || format!("'{s}' is not an N:M pattern such as 2:4");
    let (n, m) = s.split_once(':').ok_or_else(bad)?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    let m: usize = m.trim().parse().map_err(|_| bad())?;
    NofM::new(n, m).map_err(|e| e.to_string())
}

/// Checks, before any work, that `path` (given with `flag`) can be written:
/// not a directory, in a directory that exists.
pub(crate) fn check_output(flag: &'static str, path: &Path) -> Result<(), Error> {
    let invalid = |expected: &str| Error::argument(flag, path.display(), expected);
    if path.is_dir() {
        return Err(invalid("a file name, not a directory"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(invalid("a file in an existing directory"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparsity_parser() {
        assert_eq!(parse_sparsity("0.37"), Ok(0.37));
        assert_eq!(parse_sparsity("1"), Ok(1.0));
        assert!(
            parse_sparsity("1.5")
                .unwrap_err()
                .contains("outside [0, 1]")
        );
        assert!(parse_sparsity("NaN").is_err());
        assert!(
            parse_sparsity("ninety")
                .unwrap_err()
                .contains("not a number")
        );
    }

    #[test]
    fn fraction_parser() {
        assert_eq!(parse_fraction(" 0.25"), Ok(0.25));
        assert!(parse_fraction("-0.1").unwrap_err().contains("[0, 1]"));
        assert!(parse_fraction("lots").unwrap_err().contains("not a number"));
    }

    #[test]
    fn pattern_parser() {
        let p = parse_pattern("2:4").unwrap();
        assert_eq!((p.n, p.m), (2, 4));
        for bad in ["2", "2:x", ":4", "4:2", "0:4"] {
            assert!(parse_pattern(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn output_paths_are_checked() {
        let dir = std::env::temp_dir();
        assert!(check_output("--json", &dir.join("report.json")).is_ok());
        assert!(check_output("--json", Path::new("report.json")).is_ok());
        let e = check_output("--json", &dir).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        let e = check_output("--plot", Path::new("/nonexistent-dir/x.svg")).unwrap_err();
        assert!(e.to_string().starts_with("--plot"), "{e}");
    }
}
