//! The IDX format of MNIST and Fashion-MNIST (gzipped or raw).
//!
//! An IDX file is a big-endian header — two zero bytes, a type byte (`0x08`
//! for unsigned bytes), the number of dimensions — then one `u32` per
//! dimension, then the data. Only unsigned-byte files are read.

use crate::error::FormatError;

/// An IDX array of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The values, row-major.
    pub data: Vec<u8>,
}

/// The most dimensions an IDX file may declare here.
const MAX_DIMS: usize = 8;

/// Parses the bytes of an (uncompressed) IDX file of unsigned bytes.
pub fn parse_idx(mut bytes: Vec<u8>) -> Result<IdxArray, FormatError> {
    let (dims, header) = parse_header(&bytes)?;
    let expected: usize = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| FormatError::Invalid(format!("dimensions {dims:?} overflow")))?;
    let available = bytes.len() - header;
    if available < expected {
        return Err(FormatError::truncated(format!("data of dimensions {dims:?}"), expected as u64, available as u64));
    }
    if available > expected {
        return Err(FormatError::WrongSize(format!(
            "{} bytes after the header, dimensions {dims:?} need {expected}",
            available
        )));
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

/// Parses just the header: the dimensions and the header's length in bytes.
pub fn parse_header(bytes: &[u8]) -> Result<(Vec<usize>, usize), FormatError> {
    if bytes.len() < 4 {
        return Err(FormatError::truncated("the IDX magic number", 4, bytes.len() as u64));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(FormatError::BadMagic {
            expected: "00 00 08 <ndim> (IDX)".into(),
            found: format!("{:02x} {:02x} {:02x} {:02x}", bytes[0], bytes[1], bytes[2], bytes[3]),
        });
    }
    if bytes[2] != 0x08 {
        return Err(FormatError::Unsupported(format!(
            "IDX element type 0x{:02x} (only 0x08, unsigned byte)",
            bytes[2]
        )));
    }
    let ndim = bytes[3] as usize;
    if ndim == 0 || ndim > MAX_DIMS {
        return Err(FormatError::Invalid(format!("IDX header declares {ndim} dimensions")));
    }
    let header = 4 + 4 * ndim;
    if bytes.len() < header {
        return Err(FormatError::truncated("the IDX dimensions", header as u64, bytes.len() as u64));
    }
    let dims =
        bytes[4..header].chunks_exact(4).map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize).collect();
    Ok((dims, header))
}

/// Writes an IDX file of unsigned bytes (used by tests and fixtures).
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        out.extend((d as u32).to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}
