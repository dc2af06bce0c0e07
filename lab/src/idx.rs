//! Reader for IDX files, the format of MNIST.
//!
//! An IDX file is a 4-byte magic number — two zero bytes, an element type
//! byte and a rank byte — then `rank` big-endian `u32` dimensions, then the
//! elements in row-major order. Only unsigned bytes (type `0x08`) are read:
//! that is all MNIST uses. MNIST images have magic `0x00000803` and
//! dimensions `[n, 28, 28]`; labels have `0x00000801` and `[n]`.
//!
//! Files are often distributed gzip-compressed; [`read_idx`] recognises gzip
//! by its content, not its name.
//!
//! ```no_run
//! use prunus_lab::idx::read_idx;
//! use std::path::Path;
//!
//! let images = read_idx(Path::new("mnist/t10k-images-idx3-ubyte.gz"))?;
//! assert_eq!(images.dims, [10_000, 28, 28]);
//! # Ok::<(), prunus_lab::Error>(())
//! ```

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The most bytes a gzip-compressed file may decompress to (1 GiB). Far above
/// any IDX file in use (MNIST's training images are 47 MB), low enough that a
/// gzip bomb cannot exhaust memory.
pub const MAX_DECOMPRESSED_BYTES: u64 = 1 << 30;

/// The only element type supported: unsigned byte.
const TYPE_U8: u8 = 0x08;

/// The highest rank accepted; MNIST uses 1 (labels) and 3 (images).
const MAX_RANK: u8 = 4;

/// An IDX array of unsigned bytes: its dimensions and row-major data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (`[n, 28, 28]` for MNIST images).
    pub dims: Vec<usize>,
    /// The elements in row-major order; its length is the product of `dims`.
    pub data: Vec<u8>,
}

/// Reads an IDX file, gunzipping it when it starts with the gzip magic
/// (`1f 8b`), whatever its name.
///
/// # Errors
///
/// [`Error::Io`] when the file cannot be read; [`Error::Data`] when the gzip
/// stream is corrupt, truncated or decompresses to more than
/// [`MAX_DECOMPRESSED_BYTES`], or when the content is not a well-formed IDX
/// array of unsigned bytes (see [`parse_idx`]).
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = fs::read(path).map_err(|source| Error::Io {
        action: "read IDX file",
        path: path.to_path_buf(),
        source,
    })?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let raw = gunzip(&bytes, path, MAX_DECOMPRESSED_BYTES)?;
        parse_idx(&raw, path)
    } else {
        parse_idx(&bytes, path)
    }
}

/// Decompresses a gzip stream (all members), refusing to produce more than
/// `cap` bytes.
fn gunzip(bytes: &[u8], path: &Path, cap: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    // One byte past the cap tells "exactly at the cap" from "over it".
    MultiGzDecoder::new(bytes)
        .take(cap.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| data(path, format!("corrupt or truncated gzip stream: {e}")))?;
    if out.len() as u64 > cap {
        return Err(data(
            path,
            format!("gzip stream decompresses to more than {cap} bytes, the limit for an IDX file"),
        ));
    }
    Ok(out)
}

/// Parses IDX bytes (already decompressed); `path` is only used in error
/// messages.
///
/// # Errors
///
/// [`Error::Data`] when the header is truncated, the magic number does not
/// start with two zero bytes, the element type is not unsigned byte
/// (`0x08`), the rank is not 1 to 4, the product of the dimensions
/// overflows, or the data is shorter or longer than the dimensions say.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray> {
    let Some(&[z0, z1, ty, rank]) = bytes.first_chunk::<4>() else {
        return Err(data(
            path,
            format!(
                "truncated header: {} bytes, an IDX file starts with a 4-byte magic number",
                bytes.len()
            ),
        ));
    };
    if z0 != 0 || z1 != 0 {
        return Err(data(
            path,
            format!(
                "bad magic number 0x{z0:02x}{z1:02x}{ty:02x}{rank:02x}: \
                 an IDX file starts with two zero bytes (not an IDX file, or compressed \
                 in a format other than gzip?)"
            ),
        ));
    }
    if ty != TYPE_U8 {
        return Err(data(
            path,
            format!(
                "element type 0x{ty:02x} ({}) is not supported; only 0x08 (unsigned byte) is",
                type_name(ty)
            ),
        ));
    }
    if rank == 0 || rank > MAX_RANK {
        return Err(data(
            path,
            format!("rank {rank} in the magic number; must be 1 to {MAX_RANK}"),
        ));
    }
    let header_len = 4 + 4 * usize::from(rank);
    let Some(dim_bytes) = bytes.get(4..header_len) else {
        return Err(data(
            path,
            format!(
                "truncated header: rank {rank} needs {header_len} header bytes, the file has {}",
                bytes.len()
            ),
        ));
    };
    let mut dims = Vec::with_capacity(usize::from(rank));
    for chunk in dim_bytes.chunks_exact(4) {
        let d = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        // Only fails where usize is narrower than 32 bits.
        let d = usize::try_from(d).map_err(|_| {
            data(
                path,
                format!("dimension {d} does not fit in this platform's usize"),
            )
        })?;
        dims.push(d);
    }
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| {
            data(
                path,
                format!("dimensions {dims:?} have a product that overflows usize"),
            )
        })?;
    // Checked against the real length before anything is allocated from it.
    let found = bytes.len() - header_len;
    if found < expected {
        return Err(data(
            path,
            format!(
                "truncated data: dimensions {dims:?} need {expected} bytes after the \
                 {header_len}-byte header, found {found}"
            ),
        ));
    }
    if found > expected {
        return Err(data(
            path,
            format!(
                "{} trailing bytes after the {expected} data bytes of dimensions {dims:?}",
                found - expected
            ),
        ));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header_len..].to_vec(),
    })
}

/// The IDX name of an element type, for error messages.
fn type_name(ty: u8) -> &'static str {
    match ty {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0b => "i16",
        0x0c => "i32",
        0x0d => "f32",
        0x0e => "f64",
        _ => "unknown type",
    }
}

fn data(path: &Path, problem: String) -> Error {
    Error::Data {
        path: PathBuf::from(path),
        problem,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A temporary file removed on drop, unique per process and test.
    struct TempFile(PathBuf);

    impl TempFile {
        fn new(contents: &[u8]) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let path = std::env::temp_dir().join(format!(
                "prunus-idx-test-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            fs::write(&path, contents).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = fs::remove_file(&self.0);
        }
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    /// Encodes an unsigned-byte IDX file.
    fn encode(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, TYPE_U8, dims.len() as u8];
        for d in dims {
            out.extend_from_slice(&d.to_be_bytes());
        }
        out.extend_from_slice(data);
        out
    }

    fn sample() -> (Vec<u8>, IdxArray) {
        let data: Vec<u8> = (0..24).collect();
        let bytes = encode(&[2, 3, 4], &data);
        (
            bytes,
            IdxArray {
                dims: vec![2, 3, 4],
                data,
            },
        )
    }

    /// The problem of an expected `Error::Data`.
    fn problem(r: Result<IdxArray>) -> String {
        match r {
            Err(Error::Data { problem, .. }) => problem,
            other => panic!("expected Error::Data, got {other:?}"),
        }
    }

    fn parse(bytes: &[u8]) -> Result<IdxArray> {
        parse_idx(bytes, Path::new("test.idx"))
    }

    #[test]
    fn round_trip_raw_and_gzip() {
        let (bytes, want) = sample();
        assert_eq!(parse(&bytes).unwrap(), want);
        let raw = TempFile::new(&bytes);
        assert_eq!(read_idx(&raw.0).unwrap(), want);
        let gz = TempFile::new(&gzip(&bytes));
        assert_eq!(read_idx(&gz.0).unwrap(), want);
    }

    #[test]
    fn labels_rank_one_and_empty_array() {
        let a = parse(&encode(&[3], &[7, 8, 9])).unwrap();
        assert_eq!(a.dims, [3]);
        assert_eq!(a.data, [7, 8, 9]);
        let empty = parse(&encode(&[0, 28, 28], &[])).unwrap();
        assert_eq!(empty.dims, [0, 28, 28]);
        assert!(empty.data.is_empty());
    }

    #[test]
    fn truncated_magic() {
        assert!(problem(parse(&[])).contains("truncated header: 0 bytes"));
        assert!(problem(parse(&[0, 0, 8])).contains("truncated header: 3 bytes"));
    }

    #[test]
    fn bad_magic() {
        let p = problem(parse(&[0x50, 0x4b, 3, 4, 0, 0, 0, 0]));
        assert!(p.contains("bad magic number 0x504b0304"), "{p}");
    }

    #[test]
    fn unsupported_type() {
        let mut bytes = encode(&[1], &[0, 0, 0, 0]);
        bytes[2] = 0x0d;
        let p = problem(parse(&bytes));
        assert!(
            p.contains("element type 0x0d (f32) is not supported"),
            "{p}"
        );
    }

    #[test]
    fn bad_rank() {
        let p = problem(parse(&[0, 0, 8, 0]));
        assert!(p.contains("rank 0"), "{p}");
        let p = problem(parse(&encode(&[1, 1, 1, 1, 1], &[0])));
        assert!(p.contains("rank 5"), "{p}");
    }

    #[test]
    fn truncated_dimensions() {
        let bytes = encode(&[10, 28, 28], &[]);
        let p = problem(parse(&bytes[..9]));
        assert!(
            p.contains("rank 3 needs 16 header bytes, the file has 9"),
            "{p}"
        );
    }

    #[test]
    fn truncated_data() {
        let (bytes, _) = sample();
        let p = problem(parse(&bytes[..bytes.len() - 5]));
        assert!(p.contains("need 24 bytes"), "{p}");
        assert!(p.contains("found 19"), "{p}");
    }

    #[test]
    fn trailing_bytes() {
        let (mut bytes, _) = sample();
        bytes.extend_from_slice(&[1, 2]);
        let p = problem(parse(&bytes));
        assert!(p.contains("2 trailing bytes"), "{p}");
    }

    #[test]
    fn dimension_overflow() {
        let p = problem(parse(&encode(&[u32::MAX; 4], &[])));
        assert!(p.contains("overflows"), "{p}");
    }

    #[test]
    fn huge_claimed_size_is_not_allocated() {
        // Claims 4 GiB with 3 bytes present: must fail fast, not allocate.
        let p = problem(parse(&encode(&[u32::MAX], &[1, 2, 3])));
        assert!(p.contains("need 4294967295 bytes"), "{p}");
    }

    #[test]
    fn corrupt_and_truncated_gzip() {
        let (bytes, _) = sample();
        let gz = gzip(&bytes);
        let truncated = TempFile::new(&gz[..gz.len() / 2]);
        let p = problem(read_idx(&truncated.0));
        assert!(p.contains("gzip"), "{p}");
        let mut corrupt = gz.clone();
        corrupt[12] ^= 0xff;
        corrupt[13] ^= 0xff;
        let corrupt = TempFile::new(&corrupt);
        let p = problem(read_idx(&corrupt.0));
        assert!(p.contains("gzip"), "{p}");
    }

    #[test]
    fn gzip_bomb_is_capped() {
        let bomb = gzip(&vec![0u8; 100_000]);
        let err = gunzip(&bomb, Path::new("bomb.gz"), 1000).unwrap_err();
        let Error::Data { problem, path } = err else {
            panic!("expected Error::Data");
        };
        assert!(problem.contains("more than 1000 bytes"), "{problem}");
        assert_eq!(path, Path::new("bomb.gz"));
        // Exactly at the cap is fine.
        assert_eq!(
            gunzip(&bomb, Path::new("bomb.gz"), 100_000).unwrap().len(),
            100_000
        );
    }

    #[test]
    fn missing_file_is_io_error() {
        let path = std::env::temp_dir().join("prunus-idx-test-does-not-exist");
        match read_idx(&path) {
            Err(Error::Io { path: p, .. }) => assert_eq!(p, path),
            other => panic!("expected Error::Io, got {other:?}"),
        }
    }

    #[test]
    fn error_message_names_the_file() {
        let msg = parse_idx(&[], Path::new("dir/x.idx"))
            .unwrap_err()
            .to_string();
        assert!(msg.contains("dir/x.idx"), "{msg}");
    }

    #[test]
    fn mnist_test_set() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/mnist"
        ));
        if !dir.is_dir() {
            eprintln!("skipping mnist_test_set: {} not found", dir.display());
            return;
        }
        let images = read_idx(&dir.join("t10k-images-idx3-ubyte.gz")).unwrap();
        assert_eq!(images.dims, [10_000, 28, 28]);
        assert_eq!(images.data.len(), 10_000 * 28 * 28);
        let labels = read_idx(&dir.join("t10k-labels-idx1-ubyte.gz")).unwrap();
        assert_eq!(labels.dims, [10_000]);
        assert!(labels.data.iter().all(|&l| l < 10));
    }
}
