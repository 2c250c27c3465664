//! A reader for MATLAB v5 `.mat` files (the format of SVHN's
//! `train_32x32.mat`), enough for numeric arrays: level-5 headers in either
//! byte order, compressed (`miCOMPRESSED`, zlib) and plain `miMATRIX`
//! elements, small data elements, any numeric storage type. Cell arrays,
//! structs, sparse and complex arrays are skipped or refused; v7.3 files
//! (HDF5) are refused with a clear message.

use std::io::Read;

use crate::error::FormatError;
use crate::source::MAX_INFLATED_BYTES;

const MI_INT8: u32 = 1;
const MI_UINT8: u32 = 2;
const MI_INT16: u32 = 3;
const MI_UINT16: u32 = 4;
const MI_INT32: u32 = 5;
const MI_UINT32: u32 = 6;
const MI_SINGLE: u32 = 7;
const MI_DOUBLE: u32 = 9;
const MI_INT64: u32 = 12;
const MI_UINT64: u32 = 13;
const MI_MATRIX: u32 = 14;
const MI_COMPRESSED: u32 = 15;

/// `mxDOUBLE_CLASS`.
pub const MX_DOUBLE: u8 = 6;
/// `mxUINT8_CLASS`.
pub const MX_UINT8: u8 = 9;

/// How deep compressed elements may nest.
const MAX_DEPTH: usize = 4;

/// A numeric variable of a `.mat` file.
#[derive(Debug, Clone, PartialEq)]
pub struct MatArray {
    /// Variable name.
    pub name: String,
    /// Dimensions, MATLAB order (column-major: the first varies fastest).
    pub dims: Vec<usize>,
    /// The MATLAB class (`mxDOUBLE_CLASS` = 6, `mxUINT8_CLASS` = 9, ...).
    pub class: u8,
    /// The values, converted from their storage type.
    pub data: MatData,
}

/// The values of a [`MatArray`].
#[derive(Debug, Clone, PartialEq)]
pub enum MatData {
    /// Stored as unsigned bytes (kept as they are: the common image case).
    U8(Vec<u8>),
    /// Any other storage type, converted to `f64`.
    F64(Vec<f64>),
}

impl MatData {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            MatData::U8(v) => v.len(),
            MatData::F64(v) => v.len(),
        }
    }
    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The values as bytes, when every value is an integer in 0..=255.
    pub fn to_u8(&self) -> Option<Vec<u8>> {
        match self {
            MatData::U8(v) => Some(v.clone()),
            MatData::F64(v) => {
                v.iter().map(|&x| (x.fract() == 0.0 && (0.0..=255.0).contains(&x)).then_some(x as u8)).collect()
            }
        }
    }
    /// The values as `f64`.
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            MatData::U8(v) => v.iter().map(|&b| f64::from(b)).collect(),
            MatData::F64(v) => v.clone(),
        }
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    big: bool,
}

impl<'a> Cursor<'a> {
    fn u32(&mut self, what: &str) -> Result<u32, FormatError> {
        let b = self.take(4, what)?;
        let a = [b[0], b[1], b[2], b[3]];
        Ok(if self.big { u32::from_be_bytes(a) } else { u32::from_le_bytes(a) })
    }
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FormatError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            FormatError::truncated(
                what.to_string(),
                (self.pos as u64).saturating_add(n as u64),
                self.bytes.len() as u64,
            )
        })?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
    /// Reads one data element: `(type, data, was_small)`.
    fn element(&mut self, what: &str) -> Result<(u32, &'a [u8]), FormatError> {
        let first = self.u32(what)?;
        if first >> 16 != 0 {
            let (ty, n) = (first & 0xffff, (first >> 16) as usize);
            if n > 4 {
                return Err(FormatError::Invalid(format!("{what}: a small data element of {n} bytes (at most 4)")));
            }
            let data = self.take(4, what)?;
            return Ok((ty, &data[..n]));
        }
        let n = self.u32(what)? as usize;
        let data = self.take(n, what)?;
        if first != MI_COMPRESSED {
            let pad = (8 - n % 8) % 8;
            // The last element of a file may lack its padding.
            let pad = pad.min(self.bytes.len() - self.pos);
            self.pos += pad;
        }
        Ok((first, data))
    }
}

/// Parses a MATLAB v5 file into its numeric variables (others are skipped).
pub fn parse_mat(bytes: &[u8]) -> Result<Vec<MatArray>, FormatError> {
    if bytes.len() < 128 {
        return Err(FormatError::truncated("the 128-byte MAT header", 128, bytes.len() as u64));
    }
    if !bytes.starts_with(b"MATLAB") {
        return Err(FormatError::BadMagic {
            expected: "`MATLAB 5.0 MAT-file` header".into(),
            found: format!("{:?}", String::from_utf8_lossy(&bytes[..bytes.len().min(16)])),
        });
    }
    let hdf5 = bytes.get(512..).is_some_and(|b| b.starts_with(b"\x89HDF"));
    if bytes.starts_with(b"MATLAB 7.3") || hdf5 {
        return Err(FormatError::Unsupported(
            "MATLAB v7.3 (HDF5) files; save with `-v7` or convert with scipy.io.savemat".into(),
        ));
    }
    let big = match &bytes[126..128] {
        b"IM" => false,
        b"MI" => true,
        other => {
            return Err(FormatError::BadMagic {
                expected: "endian indicator `IM` or `MI` at byte 126".into(),
                found: format!("{other:?}"),
            })
        }
    };
    let mut out = Vec::new();
    let mut cur = Cursor { bytes: &bytes[128..], pos: 0, big };
    read_elements(&mut cur, &mut out, 0)?;
    Ok(out)
}

fn read_elements(cur: &mut Cursor<'_>, out: &mut Vec<MatArray>, depth: usize) -> Result<(), FormatError> {
    while !cur.done() {
        let (ty, data) = cur.element("a data element")?;
        match ty {
            MI_COMPRESSED => {
                if depth >= MAX_DEPTH {
                    return Err(FormatError::Invalid("compressed elements nested too deeply".into()));
                }
                let mut inflated = Vec::new();
                flate2::read::ZlibDecoder::new(data)
                    .take(MAX_INFLATED_BYTES)
                    .read_to_end(&mut inflated)
                    .map_err(|e| FormatError::Invalid(format!("compressed element: zlib: {e}")))?;
                let mut inner = Cursor { bytes: &inflated, pos: 0, big: cur.big };
                read_elements(&mut inner, out, depth + 1)?;
            }
            MI_MATRIX => {
                if let Some(array) = read_matrix(data, cur.big)? {
                    out.push(array);
                }
            }
            _ => {} // other top-level elements carry nothing we read
        }
    }
    Ok(())
}

fn read_matrix(data: &[u8], big: bool) -> Result<Option<MatArray>, FormatError> {
    if data.is_empty() {
        return Ok(None); // an empty matrix element is allowed by the format
    }
    let mut cur = Cursor { bytes: data, pos: 0, big };
    let (ty, flags) = cur.element("array flags")?;
    if ty != MI_UINT32 || flags.len() < 8 {
        return Err(FormatError::Invalid(format!("array flags: type {ty} with {} bytes", flags.len())));
    }
    let word = if big {
        u32::from_be_bytes([flags[0], flags[1], flags[2], flags[3]])
    } else {
        u32::from_le_bytes([flags[0], flags[1], flags[2], flags[3]])
    };
    let class = (word & 0xff) as u8;
    let complex = word & 0x800 != 0;
    if !(MX_DOUBLE..=15).contains(&class) {
        return Ok(None); // cell, struct, object, char, sparse: not read
    }
    let (ty, dims_bytes) = cur.element("dimensions")?;
    if ty != MI_INT32 || dims_bytes.is_empty() || dims_bytes.len() % 4 != 0 {
        return Err(FormatError::Invalid(format!("dimensions: type {ty} with {} bytes", dims_bytes.len())));
    }
    let mut dims = Vec::new();
    for c in dims_bytes.chunks_exact(4) {
        let a = [c[0], c[1], c[2], c[3]];
        let d = if big { i32::from_be_bytes(a) } else { i32::from_le_bytes(a) };
        if d < 0 {
            return Err(FormatError::Invalid(format!("negative dimension {d}")));
        }
        dims.push(d as usize);
    }
    let count = dims
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| FormatError::Invalid(format!("dimensions {dims:?} overflow")))?;
    let (_, name) = cur.element("array name")?;
    let name = String::from_utf8_lossy(name).into_owned();
    if complex {
        return Err(FormatError::Unsupported(format!("complex array `{name}`")));
    }
    let (ty, real) = cur.element(&format!("the values of `{name}`"))?;
    let width = match ty {
        MI_INT8 | MI_UINT8 => 1,
        MI_INT16 | MI_UINT16 => 2,
        MI_INT32 | MI_UINT32 | MI_SINGLE => 4,
        MI_DOUBLE | MI_INT64 | MI_UINT64 => 8,
        other => return Err(FormatError::Invalid(format!("`{name}`: values of storage type {other}"))),
    };
    let needed = count.checked_mul(width).ok_or_else(|| FormatError::Invalid("array too large".into()))?;
    if real.len() != needed {
        return Err(FormatError::WrongSize(format!(
            "`{name}` of dimensions {dims:?} needs {needed} bytes of values, has {}",
            real.len()
        )));
    }
    let data = if ty == MI_UINT8 {
        MatData::U8(real.to_vec())
    } else {
        let get = |c: &[u8]| -> f64 {
            macro_rules! num {
                ($t:ty, $n:expr) => {{
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    (if big { <$t>::from_be_bytes(a) } else { <$t>::from_le_bytes(a) }) as f64
                }};
            }
            match ty {
                MI_INT8 => f64::from(c[0] as i8),
                MI_INT16 => num!(i16, 2),
                MI_UINT16 => num!(u16, 2),
                MI_INT32 => num!(i32, 4),
                MI_UINT32 => num!(u32, 4),
                MI_SINGLE => num!(f32, 4),
                MI_DOUBLE => num!(f64, 8),
                MI_INT64 => num!(i64, 8),
                _ => num!(u64, 8),
            }
        };
        MatData::F64(real.chunks_exact(width).map(get).collect())
    };
    Ok(Some(MatArray { name, dims, class, data }))
}

/// One variable to write with [`encode_mat`]: name, dims, MATLAB class and
/// its values stored as `u8` or `f64`.
#[derive(Debug, Clone)]
pub struct MatVar<'a> {
    /// Variable name.
    pub name: &'a str,
    /// Dimensions (column-major).
    pub dims: Vec<usize>,
    /// MATLAB class.
    pub class: u8,
    /// Values.
    pub data: MatData,
}

/// Writes a little-endian MATLAB v5 file (for tests and fixtures), each
/// variable compressed when `compress`.
pub fn encode_mat(vars: &[MatVar<'_>], compress: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut header = b"MATLAB 5.0 MAT-file, written by nas-datasets".to_vec();
    header.resize(116, b' ');
    header.extend([0u8; 8]);
    header.extend([0x00, 0x01]);
    header.extend(b"IM");
    out.extend(header);
    for var in vars {
        let mut m = Vec::new();
        element(&mut m, MI_UINT32, &[u32::from(var.class).to_le_bytes(), 0u32.to_le_bytes()].concat());
        let dims: Vec<u8> = var.dims.iter().flat_map(|&d| (d as i32).to_le_bytes()).collect();
        element(&mut m, MI_INT32, &dims);
        element(&mut m, MI_INT8, var.name.as_bytes());
        match &var.data {
            MatData::U8(v) => element(&mut m, MI_UINT8, v),
            MatData::F64(v) => element(&mut m, MI_DOUBLE, &v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>()),
        }
        let mut matrix = Vec::new();
        element(&mut matrix, MI_MATRIX, &m);
        if compress {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut z, &matrix).expect("writing to a Vec cannot fail");
            let z = z.finish().expect("writing to a Vec cannot fail");
            out.extend(MI_COMPRESSED.to_le_bytes());
            out.extend((z.len() as u32).to_le_bytes());
            out.extend(z);
        } else {
            out.extend(matrix);
        }
    }
    out
}

fn element(out: &mut Vec<u8>, ty: u32, data: &[u8]) {
    out.extend(ty.to_le_bytes());
    out.extend((data.len() as u32).to_le_bytes());
    out.extend_from_slice(data);
    out.resize(out.len() + (8 - data.len() % 8) % 8, 0);
}
