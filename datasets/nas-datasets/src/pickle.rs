//! A small, strict reader for the python-pickle release of CIFAR
//! (`cifar-10-batches-py/data_batch_1`, `cifar-100-python/train`, ...): a
//! pickled dict of lists and numpy `uint8` arrays.
//!
//! It runs the pickle opcodes such files use (protocols 0–4 binary forms)
//! without calling anything: a `GLOBAL` is just a name, a `REDUCE` or
//! `BUILD` just records its arguments, so a hostile pickle can only produce
//! an error. Numpy arrays are recognised by their `_reconstruct` + `BUILD`
//! state. Anything else is an error naming the opcode and offset.

use std::collections::HashMap;

use crate::error::FormatError;

/// A value on the pickle stack.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A python-2 `str` or python-3 `bytes`.
    Bytes(Vec<u8>),
    /// A unicode string.
    Str(String),
    /// A list.
    List(Vec<Value>),
    /// A tuple.
    Tuple(Vec<Value>),
    /// A dict, in insertion order.
    Dict(Vec<(Value, Value)>),
    /// A global (`module`, `name`), never resolved.
    Global(String, String),
    /// `callable(*args)`, never called; `state` from a later `BUILD`.
    Reduce {
        /// What would be called.
        callable: Box<Value>,
        /// Its arguments.
        args: Box<Value>,
        /// The state given by `BUILD`, if any.
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// The text of a `Str` or (UTF-8) `Bytes`.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    /// Roughly how many bytes the value holds (bounds memo copies).
    fn weight(&self) -> usize {
        match self {
            Value::Bytes(b) => b.len() + 1,
            Value::Str(t) => t.len() + 1,
            Value::List(v) | Value::Tuple(v) => v.iter().map(Value::weight).sum::<usize>() + 1,
            Value::Dict(v) => v.iter().map(|(k, x)| k.weight() + x.weight()).sum::<usize>() + 1,
            Value::Global(m, n) => m.len() + n.len() + 1,
            Value::Reduce { callable, args, state } => {
                callable.weight() + args.weight() + state.as_ref().map_or(0, |s| s.weight()) + 1
            }
            _ => 1,
        }
    }

    /// A dict entry by string key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(items) => items.iter().find(|(k, _)| k.as_text() == Some(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

/// The most values the stack and memo may hold (guards against blow-ups).
const MAX_ITEMS: usize = 10_000_000;

/// Runs a pickle and returns the value it builds.
pub fn parse_pickle(bytes: &[u8]) -> Result<Value, FormatError> {
    let mut stack: Vec<Value> = Vec::new();
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    let mut pos = 0usize;
    // Memo copies may not hold more than a few times the input.
    let mut copy_budget = bytes.len().saturating_mul(4).saturating_add(1 << 20);
    let mut charge = |v: &Value, op: u8, at: usize| -> Result<(), FormatError> {
        copy_budget = copy_budget.checked_sub(v.weight()).ok_or_else(|| {
            FormatError::Invalid(format!("pickle opcode 0x{op:02x} at offset {at}: too many memo copies"))
        })?;
        Ok(())
    };
    let take = |pos: &mut usize, n: usize| -> Result<&[u8], FormatError> {
        let end = pos.checked_add(n).filter(|&e| e <= bytes.len()).ok_or_else(|| {
            FormatError::truncated(
                format!("pickle argument at offset {pos}"),
                (*pos as u64).saturating_add(n as u64),
                bytes.len() as u64,
            )
        })?;
        let s = &bytes[*pos..end];
        *pos = end;
        Ok(s)
    };
    let le = |b: &[u8]| -> u64 { b.iter().rev().fold(0u64, |a, &x| (a << 8) | u64::from(x)) };
    let bad =
        |op: u8, at: usize, why: &str| FormatError::Invalid(format!("pickle opcode 0x{op:02x} at offset {at}: {why}"));
    loop {
        let at = pos;
        let op = *take(&mut pos, 1)?.first().expect("take(1) returns one byte");
        if stack.len() > MAX_ITEMS || memo.len() > MAX_ITEMS {
            return Err(FormatError::Invalid("pickle too large".into()));
        }
        let pop = |stack: &mut Vec<Value>| stack.pop().ok_or_else(|| bad(op, at, "empty stack"));
        let pop_mark = |stack: &mut Vec<Value>, marks: &mut Vec<usize>| -> Result<Vec<Value>, FormatError> {
            let m = marks.pop().ok_or_else(|| bad(op, at, "no mark"))?;
            if m > stack.len() {
                return Err(bad(op, at, "mark above the stack"));
            }
            Ok(stack.split_off(m))
        };
        match op {
            0x80 => {
                take(&mut pos, 1)?; // PROTO
            }
            0x95 => {
                take(&mut pos, 8)?; // FRAME
            }
            b'.' => return pop(&mut stack), // STOP
            b'(' => marks.push(stack.len()),
            b'}' => stack.push(Value::Dict(Vec::new())),
            b']' => stack.push(Value::List(Vec::new())),
            b')' => stack.push(Value::Tuple(Vec::new())),
            b'N' => stack.push(Value::None),
            0x88 => stack.push(Value::Bool(true)),
            0x89 => stack.push(Value::Bool(false)),
            b'K' => {
                let v = take(&mut pos, 1)?[0];
                stack.push(Value::Int(i64::from(v)));
            }
            b'M' => {
                let v = le(take(&mut pos, 2)?);
                stack.push(Value::Int(v as i64));
            }
            b'J' => {
                let b = take(&mut pos, 4)?;
                stack.push(Value::Int(i64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))));
            }
            0x8a => {
                let n = take(&mut pos, 1)?[0] as usize;
                let b = take(&mut pos, n)?;
                if n > 8 {
                    return Err(bad(op, at, "integer wider than 64 bits"));
                }
                let mut v = le(b) as i64;
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Value::Int(v));
            }
            b'G' => {
                let b = take(&mut pos, 8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                stack.push(Value::Float(f64::from_be_bytes(a)));
            }
            b'U' | b'C' => {
                let n = take(&mut pos, 1)?[0] as usize;
                stack.push(Value::Bytes(take(&mut pos, n)?.to_vec()));
            }
            b'T' | b'B' => {
                let n = le(take(&mut pos, 4)?) as usize;
                stack.push(Value::Bytes(take(&mut pos, n)?.to_vec()));
            }
            0x8e => {
                let n = usize::try_from(le(take(&mut pos, 8)?)).map_err(|_| bad(op, at, "length overflows"))?;
                stack.push(Value::Bytes(take(&mut pos, n)?.to_vec()));
            }
            0x8c | b'X' | 0x8d => {
                let width = match op {
                    0x8c => 1,
                    b'X' => 4,
                    _ => 8,
                };
                let n = usize::try_from(le(take(&mut pos, width)?)).map_err(|_| bad(op, at, "length overflows"))?;
                let s = std::str::from_utf8(take(&mut pos, n)?).map_err(|_| bad(op, at, "string is not UTF-8"))?;
                stack.push(Value::Str(s.to_string()));
            }
            b'c' => {
                let mut line = || -> Result<String, FormatError> {
                    let rest = &bytes[pos.min(bytes.len())..];
                    let end = rest.iter().position(|&b| b == b'\n').ok_or_else(|| bad(op, at, "unterminated name"))?;
                    let s = String::from_utf8_lossy(&rest[..end]).into_owned();
                    pos += end + 1;
                    Ok(s)
                };
                let module = line()?;
                let name = line()?;
                stack.push(Value::Global(module, name));
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module.as_text(), name.as_text()) {
                    (Some(m), Some(n)) => stack.push(Value::Global(m.into(), n.into())),
                    _ => return Err(bad(op, at, "module and name must be strings")),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::Tuple(items));
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(bad(op, at, "stack too short"));
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Value::Tuple(items));
            }
            b'l' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                stack.push(Value::List(items));
            }
            b'd' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                if items.len() % 2 != 0 {
                    return Err(bad(op, at, "odd number of dict items"));
                }
                let mut it = items.into_iter();
                let mut pairs = Vec::new();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                stack.push(Value::Dict(pairs));
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err(bad(op, at, "append to a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                match stack.last_mut() {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(bad(op, at, "append to a non-list")),
                }
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Dict(d)) => d.push((k, v)),
                    _ => return Err(bad(op, at, "set item on a non-dict")),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack, &mut marks)?;
                if items.len() % 2 != 0 {
                    return Err(bad(op, at, "odd number of dict items"));
                }
                match stack.last_mut() {
                    Some(Value::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err(bad(op, at, "set items on a non-dict")),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let callable = pop(&mut stack)?;
                stack.push(Value::Reduce { callable: Box::new(callable), args: Box::new(args), state: None });
            }
            b'b' => {
                let state = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Value::Reduce { state: s, .. }) => *s = Some(Box::new(state)),
                    _ => return Err(bad(op, at, "BUILD on a value that is not an object")),
                }
            }
            b'q' | b'r' | 0x94 => {
                let key = match op {
                    b'q' => u32::from(take(&mut pos, 1)?[0]),
                    b'r' => le(take(&mut pos, 4)?) as u32,
                    _ => memo.len() as u32,
                };
                let top = stack.last().ok_or_else(|| bad(op, at, "empty stack"))?;
                charge(top, op, at)?;
                memo.insert(key, top.clone());
            }
            b'h' | b'j' => {
                let key = if op == b'h' { u32::from(take(&mut pos, 1)?[0]) } else { le(take(&mut pos, 4)?) as u32 };
                let v = memo.get(&key).ok_or_else(|| bad(op, at, "unknown memo key"))?;
                charge(v, op, at)?;
                stack.push(v.clone());
            }
            b'0' => {
                pop(&mut stack)?;
            }
            other => return Err(bad(other, at, "not supported")),
        }
    }
}

/// A numpy array of unsigned bytes: `(shape, data)`, from a pickled
/// `ndarray` (`_reconstruct` + `BUILD` state `(version, shape, dtype,
/// fortran_order, data)`).
pub fn numpy_u8(value: &Value) -> Result<(Vec<usize>, Vec<u8>), FormatError> {
    let not = |why: &str| FormatError::Invalid(format!("not a numpy uint8 array: {why}"));
    let Value::Reduce { callable, state: Some(state), .. } = value else { return Err(not("no reconstructed object")) };
    if !matches!(&**callable, Value::Global(_, name) if name == "_reconstruct") {
        return Err(not("not made by numpy's _reconstruct"));
    }
    let Value::Tuple(items) = &**state else { return Err(not("state is not a tuple")) };
    let [_, Value::Tuple(shape), dtype, Value::Bool(fortran), data] = &items[..] else {
        return Err(not("unexpected state layout"));
    };
    if *fortran {
        return Err(not("Fortran order"));
    }
    let dtype_name = match dtype {
        Value::Reduce { args, .. } => match &**args {
            Value::Tuple(a) => a.first().and_then(Value::as_text).unwrap_or_default().to_string(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    if dtype_name != "u1" && dtype_name != "|u1" {
        return Err(not(&format!("dtype `{dtype_name}`, expected u1")));
    }
    let shape: Vec<usize> = shape
        .iter()
        .map(|d| match d {
            Value::Int(i) if *i >= 0 => Ok(*i as usize),
            _ => Err(not("bad shape")),
        })
        .collect::<Result<_, _>>()?;
    let latin1;
    let data: &[u8] = match data {
        Value::Bytes(b) => b,
        // Python 3 writing protocol 2 encodes bytes as `_codecs.encode(text, "latin1")`.
        Value::Reduce { callable, args, .. } if matches!(&**callable, Value::Global(_, n) if n == "encode") => {
            match &**args {
                Value::Tuple(a) if a.len() == 2 && matches!(a[1].as_text(), Some("latin1" | "latin-1")) => {
                    let Value::Str(text) = &a[0] else { return Err(not("encoded data is not text")) };
                    latin1 = text
                        .chars()
                        .map(|c| u8::try_from(u32::from(c)).map_err(|_| not("encoded data is not latin-1")))
                        .collect::<Result<Vec<u8>, _>>()?;
                    &latin1
                }
                _ => return Err(not("data is encoded in an unknown way")),
            }
        }
        _ => return Err(not("data is not bytes")),
    };
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| not("shape overflows"))?;
    if n != data.len() {
        return Err(FormatError::WrongSize(format!("array of shape {shape:?} with {} bytes", data.len())));
    }
    Ok((shape, data.to_vec()))
}

/// A list of small non-negative integers (CIFAR labels).
pub fn int_list(value: &Value) -> Result<Vec<i64>, FormatError> {
    let Value::List(items) = value else { return Err(FormatError::Invalid("labels are not a list".into())) };
    items
        .iter()
        .map(|v| match v {
            Value::Int(i) => Ok(*i),
            _ => Err(FormatError::Invalid("a label is not an integer".into())),
        })
        .collect()
}
