//! Output files written atomically, never over the input by accident.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// How an output may replace existing files.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Allow the output to be the input file itself (replaced atomically
    /// once the new file is complete).
    pub in_place: bool,
    /// Allow replacing an existing file other than the input.
    pub overwrite: bool,
}

/// Writes `output` through `fill`: into a temporary file in the same
/// folder, flushed, synced and given the input's permissions, then renamed
/// over `output` (and the folder synced). On any error the temporary file is removed and `output`
/// is left as it was. `input` is the file the data comes from (`<memory>`
/// when none), checked against `output` as [`Options`] says.
pub fn write_atomic<T>(
    input: &Path,
    output: &Path,
    options: Options,
    fill: impl FnOnce(&mut dyn Write) -> Result<T>,
) -> Result<T> {
    if let Ok(out_meta) = fs::metadata(output) {
        if same_file(input, output) {
            if !options.in_place {
                return Err(Error::OutputIsInput {
                    path: input.display().to_string(),
                });
            }
        } else if !options.overwrite {
            return Err(Error::Request {
                reason: format!("{} exists; pass --force to replace it", output.display()),
            });
        }
        if !out_meta.is_file() {
            return Err(Error::Request {
                reason: format!("{} is not a regular file", output.display()),
            });
        }
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".prunus-tmp")
        .tempfile_in(dir)
        .map_err(|e| Error::io("create a temporary file in", dir, &e))?;
    let mut w = BufWriter::with_capacity(8 << 20, tmp.as_file());
    let value = fill(&mut w)?;
    w.flush().map_err(|e| Error::io("write", tmp.path(), &e))?;
    drop(w);
    if let Ok(meta) = fs::metadata(input) {
        // Best effort: a temporary file is private (0600) by default.
        let _ = tmp.as_file().set_permissions(meta.permissions());
    }
    tmp.as_file()
        .sync_all()
        .map_err(|e| Error::io("sync", tmp.path(), &e))?;
    tmp.persist(output)
        .map_err(|e| Error::io("rename the temporary file to", output, &e.error))?;
    // Best effort: make the rename itself durable.
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(value)
}

/// Whether two paths name the same existing file (hard links included).
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (fs::metadata(a), fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
        false
    }
    #[cfg(not(unix))]
    {
        match (fs::canonicalize(a), fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        }
    }
}
