//! A safetensors checkpoint opened for reading: the header checked up front,
//! each tensor's data (or a run of small neighbours) memory-mapped on
//! demand and unmapped after use, so reading a checkpoint larger than
//! memory keeps only the tensors at hand resident.

use std::fs::File;
use std::io::Read;
use std::ops::Deref;
use std::path::{Path, PathBuf};

use super::header::{self, Header, MAX_HEADER, TensorInfo};
use crate::error::{Error, Problem, Result};

/// Where the bytes come from.
enum Source {
    /// A file, mapped tensor by tensor.
    File(File),
    /// Bytes already in memory.
    Bytes(Vec<u8>),
}

/// A checked safetensors checkpoint. The file is opened read-only and never
/// written.
///
/// ```
/// use prunus_adapters::safetensors::Checkpoint;
/// let mut bytes = Vec::new();
/// let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
/// bytes.extend_from_slice(&(header.len() as u64).to_le_bytes());
/// bytes.extend_from_slice(header);
/// bytes.extend_from_slice(&[0, 0, 128, 63, 0, 0, 0, 64]); // 1.0, 2.0
/// let c = Checkpoint::from_bytes(bytes)?;
/// assert_eq!(c.tensors()[0].name, "w");
/// assert_eq!(c.values(0)?, [1.0, 2.0]);
/// # Ok::<(), prunus_adapters::Error>(())
/// ```
pub struct Checkpoint {
    path: PathBuf,
    source: Source,
    /// Bytes before the data section (length field and header).
    data_start: u64,
    header: Header,
}

/// One tensor's bytes (dereference it to `&[u8]`): a mapping of the file,
/// released when dropped, or a slice of bytes in memory.
pub struct TensorData<'a>(Bytes<'a>);

enum Bytes<'a> {
    Mapped(memmap2::Mmap),
    Slice(&'a [u8]),
}

impl Deref for TensorData<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Mapped(m) => m,
            Bytes::Slice(s) => s,
        }
    }
}

impl Checkpoint {
    /// Opens `path` read-only and checks its header against its length.
    pub fn open(path: impl AsRef<Path>) -> Result<Checkpoint> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| Error::io("open", path, &e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("read", path, &e))?
            .len();
        let declared = declared_header(len, |buf| file.read_exact(buf))
            .map_err(|f| fault(path, f))?
            .map_err(|e| Error::io("read", path, &e))?;
        let mut text = vec![0u8; declared as usize];
        file.read_exact(&mut text)
            .map_err(|e| Error::io("read", path, &e))?;
        let header = header::parse(&text, len - 8 - declared).map_err(|f| fault(path, f))?;
        Ok(Checkpoint {
            path: path.into(),
            source: Source::File(file),
            data_start: 8 + declared,
            header,
        })
    }

    /// Checks `bytes` as a whole safetensors file.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Checkpoint> {
        let path = Path::new("<memory>");
        let len = bytes.len() as u64;
        let declared = declared_header(len, |buf| {
            buf.copy_from_slice(&bytes[..8]);
            Ok(())
        })
        .map_err(|f| fault(path, f))?
        .map_err(|e| Error::io("read", path, &e))?;
        let end = 8 + declared as usize;
        let header = header::parse(&bytes[8..end], len - end as u64).map_err(|f| fault(path, f))?;
        Ok(Checkpoint {
            path: path.into(),
            source: Source::Bytes(bytes),
            data_start: end as u64,
            header,
        })
    }

    /// The file's path (`<memory>` for bytes).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensors in the order of their data.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }

    /// The free-form `__metadata__` entries.
    pub fn metadata(&self) -> &[(String, String)] {
        &self.header.metadata
    }

    /// Tensor `i`'s entry, or an error naming the count.
    fn tensor(&self, i: usize) -> Result<&TensorInfo> {
        self.header.tensors.get(i).ok_or_else(|| Error::Request {
            reason: format!(
                "{} has {} tensors; there is no tensor {i}",
                self.path.display(),
                self.header.tensors.len()
            ),
        })
    }

    /// The size of the whole file in bytes.
    pub fn file_len(&self) -> u64 {
        self.data_start + self.header.tensors.last().map_or(0, |t| t.end)
    }

    /// The bytes of tensor `i` (in [`Checkpoint::tensors`] order). A file's
    /// tensor is memory-mapped; the mapping is released when the result is
    /// dropped.
    pub fn data(&self, i: usize) -> Result<TensorData<'_>> {
        let t = self.tensor(i)?;
        match &self.source {
            Source::Bytes(b) => Ok(TensorData(Bytes::Slice(
                &b[(self.data_start + t.start) as usize..(self.data_start + t.end) as usize],
            ))),
            Source::File(_) if t.is_empty() => Ok(TensorData(Bytes::Slice(&[]))),
            Source::File(f) => {
                self.check_length(f, &t.name, t.end)?;
                map(f, self.data_start + t.start, t.len())
                    .map(|m| TensorData(Bytes::Mapped(m)))
                    .map_err(|e| Error::io("map", &self.path, &e))
            }
        }
    }

    /// Fails when the file, cut short since it was opened, no longer holds
    /// data up to `end` (of tensor `name`): a mapping would fault on access
    /// to the missing pages.
    fn check_length(&self, f: &File, name: &str, end: u64) -> Result<()> {
        let now = f
            .metadata()
            .map_err(|e| Error::io("read", &self.path, &e))?
            .len();
        if now < self.data_start + end {
            return Err(fault(
                &self.path,
                (
                    Some(name.to_string()),
                    Problem::OutOfRange {
                        end,
                        available: now.saturating_sub(self.data_start),
                    },
                ),
            ));
        }
        Ok(())
    }

    /// Copies `buf.len()` bytes of tensor `i`'s data from byte `offset` of
    /// it into `buf`, without mapping the tensor: the sampled reads of a
    /// selection touch a few pages here and there, and a mapping would read
    /// ahead around each (and populate the whole tensor). Fails as
    /// [`Checkpoint::data`] does on a file truncated since it was opened.
    pub(crate) fn read_span(&self, i: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let t = self.tensor(i)?;
        let end = offset + buf.len() as u64;
        if end > t.len() {
            return Err(Error::Request {
                reason: format!(
                    "bytes {offset}..{end} are outside tensor '{}' ({} bytes)",
                    t.name,
                    t.len()
                ),
            });
        }
        match &self.source {
            Source::Bytes(b) => {
                let at = (self.data_start + t.start + offset) as usize;
                buf.copy_from_slice(&b[at..at + buf.len()]);
                Ok(())
            }
            #[cfg(unix)]
            Source::File(f) => {
                use std::os::unix::fs::FileExt;
                f.read_exact_at(buf, self.data_start + t.start + offset)
                    .map_err(|e| match e.kind() {
                        std::io::ErrorKind::UnexpectedEof => self
                            .data(i)
                            .err()
                            .unwrap_or_else(|| Error::io("read", &self.path, &e)),
                        _ => Error::io("read", &self.path, &e),
                    })
            }
            #[cfg(not(unix))]
            Source::File(_) => {
                let data = self.data(i)?;
                buf.copy_from_slice(&data[offset as usize..end as usize]);
                Ok(())
            }
        }
    }

    /// The data of tensors `first..=last` and whatever lies between them,
    /// as one mapping (released when dropped): a run of small tensors costs
    /// one mapping instead of one each. Tensor `i`'s bytes start at
    /// `tensors()[i].start - tensors()[first].start`. Fails as
    /// [`Checkpoint::data`] does on a file truncated since it was opened.
    pub(crate) fn span(&self, first: usize, last: usize) -> Result<TensorData<'_>> {
        let (a, b) = (self.tensor(first)?, self.tensor(last)?);
        let (start, end) = (a.start, b.end.max(a.start));
        match &self.source {
            Source::Bytes(bytes) => Ok(TensorData(Bytes::Slice(
                &bytes[(self.data_start + start) as usize..(self.data_start + end) as usize],
            ))),
            Source::File(_) if start == end => Ok(TensorData(Bytes::Slice(&[]))),
            Source::File(f) => {
                self.check_length(f, &b.name, end)?;
                map(f, self.data_start + start, end - start)
                    .map(|m| TensorData(Bytes::Mapped(m)))
                    .map_err(|e| Error::io("map", &self.path, &e))
            }
        }
    }

    /// Tensor `i`'s values as `f32` (exact for F32, F16 and BF16); an error
    /// for other dtypes.
    pub fn values(&self, i: usize) -> Result<Vec<f32>> {
        let t = self.tensor(i)?;
        if !t.dtype.is_prunable() {
            return Err(Error::Request {
                reason: format!("tensor '{}' is {}, not F32, F16 or BF16", t.name, t.dtype),
            });
        }
        let data = self.data(i)?;
        let w = t.dtype.width();
        Ok(data.chunks_exact(w).map(|b| t.dtype.decode(b)).collect())
    }
}

/// Reads the 8-byte length field with `read` and checks it against a file of
/// `len` bytes.
fn declared_header(
    len: u64,
    read: impl FnOnce(&mut [u8; 8]) -> std::io::Result<()>,
) -> std::result::Result<std::io::Result<u64>, header::Fault> {
    if len < 8 {
        return Err((None, Problem::TooShort { len }));
    }
    let mut n = [0u8; 8];
    if let Err(e) = read(&mut n) {
        return Ok(Err(e));
    }
    let declared = u64::from_le_bytes(n);
    if declared > MAX_HEADER {
        return Err((
            None,
            Problem::HeaderTooLarge {
                declared,
                limit: MAX_HEADER,
            },
        ));
    }
    if declared > len - 8 {
        return Err((
            None,
            Problem::HeaderLength {
                declared,
                available: len - 8,
            },
        ));
    }
    Ok(Ok(declared))
}

fn fault(path: &Path, (tensor, problem): header::Fault) -> Error {
    Error::Malformed {
        path: path.display().to_string(),
        tensor,
        problem,
    }
}

/// Maps `len` bytes of `file` from `offset`, read-only.
#[allow(unsafe_code)]
fn map(file: &File, offset: u64, len: u64) -> std::io::Result<memmap2::Mmap> {
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("tensor too large"))?;
    // SAFETY: the mapping is read-only and private to this process. Its
    // contents change if another process writes the file meanwhile (the
    // values read are then whatever the file holds), and access faults if
    // the file is truncated below the mapped range after the length check
    // above; prunus itself never writes its input.
    unsafe {
        memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .populate()
            .map(file)
    }
}
