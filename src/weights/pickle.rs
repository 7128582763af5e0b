//! A restricted unpickler for PyTorch files: `torch.save` zip checkpoints and TorchScript
//! archives (OpenAI's `RN50.pt`).
//!
//! Nothing in the file is ever executed. The pickle is interpreted by a small stack machine
//! that knows only the opcodes these files use and a fixed list of globals:
//! `collections.OrderedDict`, `torch._utils._rebuild_tensor{,_v2}`,
//! `torch._utils._rebuild_parameter`, the `torch.*Storage` types, the identity helpers of
//! `torch.jit._pickle` and TorchScript classes (`__torch__.*`, which become inert records of
//! their attributes). Any other global (`os.system`, `builtins.eval`,
//! `torch.storage._load_from_bytes`, ...) is refused with an error that names it.
//!
//! Tensors are rebuilt from `<archive>/data/<key>` storages (storage + offset + size + stride)
//! on the CPU, contiguous, in their stored dtype.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{Kind, Tensor};
use zip::ZipArchive;

use super::TensorMap;
use crate::error::{Error, Result};

/// Largest `data.pkl` accepted (the pickle itself, not the tensor data).
const MAX_PICKLE_BYTES: u64 = 64 << 20;
/// Deepest nesting of dicts/modules walked when collecting tensors.
const MAX_DEPTH: usize = 64;
/// Most dict entries / objects visited when collecting tensors (shared references in a
/// hostile pickle could otherwise make the walk exponential).
const MAX_VISITS: usize = 4_000_000;

/// What kind of PyTorch archive a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveKind {
    /// `torch.save(obj, f)` (zip format, PyTorch >= 1.6).
    Checkpoint,
    /// `torch.jit.save` / `torch.jit.trace(...).save` (has `code/` and `constants.pkl`).
    TorchScript,
}

/// The tensors of a PyTorch file, named by their dotted path from the pickled root object:
/// `params.encoder.conv1.weight` for `{'params': state_dict}`, `visual.conv1.weight` for a
/// TorchScript module with a `visual` submodule.
#[derive(Debug)]
pub struct TorchFile {
    pub kind: ArchiveKind,
    pub tensors: TensorMap,
}

/// Read the tensors of a PyTorch zip file whose dotted name passes `keep` (others are never
/// read from the archive).
pub fn read_torch_file(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<TorchFile> {
    let mut archive = Archive::open(path)?;
    let bytes = archive.read_entry("data.pkl", MAX_PICKLE_BYTES)?;
    let root = parse_pickle(&bytes).map_err(|m| Error::format(path, m))?;
    let mut refs = Vec::new();
    let mut budget = MAX_VISITS;
    collect_tensors(&root, "", 0, &mut budget, &mut refs).map_err(|m| Error::format(path, m))?;
    let mut tensors = TensorMap::new();
    let mut storages = HashMap::new();
    for (name, tref) in refs.into_iter().filter(|(n, _)| keep(n)) {
        let t = archive.tensor(&tref, &mut storages)?;
        tensors.insert(name, t);
    }
    Ok(TorchFile {
        kind: archive.kind,
        tensors,
    })
}

// ---------------------------------------------------------------------------------------------
// The zip container

struct Archive {
    path: PathBuf,
    zip: ZipArchive<BufReader<File>>,
    /// `<archive>/`: every entry lives under one top-level folder.
    prefix: String,
    kind: ArchiveKind,
    big_endian: bool,
}

impl Archive {
    fn open(path: &Path) -> Result<Archive> {
        check_magic(path)?;
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let zip = ZipArchive::new(BufReader::new(file)).map_err(|e| {
            Error::format(
                path,
                format!("not a PyTorch file: truncated or corrupt zip archive ({e})"),
            )
        })?;
        let names: Vec<String> = zip
            .file_names()
            .filter_map(|n| n.ok())
            .map(|n| n.into_owned())
            .collect();
        let prefix = find_prefix(&names).map_err(|m| Error::format(path, m))?;
        let script = names.iter().any(|n| {
            n.starts_with(&format!("{prefix}code/")) || *n == format!("{prefix}constants.pkl")
        });
        let kind = if script {
            ArchiveKind::TorchScript
        } else {
            ArchiveKind::Checkpoint
        };
        let mut archive = Archive {
            path: path.to_path_buf(),
            zip,
            prefix,
            kind,
            big_endian: false,
        };
        if names.contains(&format!("{}byteorder", archive.prefix)) {
            let order = archive.read_entry("byteorder", 16)?;
            archive.big_endian = match order.as_slice() {
                b"little" => false,
                b"big" => true,
                other => {
                    let s = String::from_utf8_lossy(other);
                    return Err(Error::format(path, format!("unknown byteorder '{s}'")));
                }
            };
        }
        Ok(archive)
    }

    /// Read `<prefix><name>`, at most `limit` bytes.
    fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let full = format!("{}{name}", self.prefix);
        let path = &self.path;
        let entry = self.zip.by_name(&full).map_err(|e| {
            Error::format(path, format!("cannot read {full} from the archive: {e}"))
        })?;
        if entry.size() > limit {
            return Err(Error::format(
                path,
                format!("{full} is {} bytes, more than {limit}", entry.size()),
            ));
        }
        let mut buf = Vec::new();
        entry.take(limit).read_to_end(&mut buf).map_err(|e| {
            Error::format(
                path,
                format!("cannot read {full} (truncated archive?): {e}"),
            )
        })?;
        Ok(buf)
    }

    /// A storage as a flat CPU tensor of `numel` elements (cached: tensors may share one).
    fn storage(&mut self, s: &StorageRef, cache: &mut HashMap<String, Tensor>) -> Result<Tensor> {
        if let Some(t) = cache.get(&s.key) {
            if t.kind() != s.kind || t.numel() as u64 != s.numel {
                let msg = format!(
                    "storage {} is used with two different types or sizes",
                    s.key
                );
                return Err(Error::format(&self.path, msg));
            }
            return Ok(t.shallow_clone());
        }
        let elt = s.kind.elt_size_in_bytes() as u64;
        let bytes = s
            .numel
            .checked_mul(elt)
            .ok_or_else(|| Error::format(&self.path, format!("storage {} is too large", s.key)))?;
        let mut data = self.read_entry(&format!("data/{}", s.key), bytes)?;
        if data.len() as u64 != bytes {
            return Err(Error::format(
                &self.path,
                format!(
                    "storage data/{} holds {} bytes, the pickle says {bytes} (truncated file?)",
                    s.key,
                    data.len()
                ),
            ));
        }
        if self.big_endian && elt > 1 {
            data.chunks_exact_mut(elt as usize)
                .for_each(|c| c.reverse());
        }
        let t = Tensor::f_from_data_size(&data, &[s.numel as i64], s.kind)?;
        cache.insert(s.key.clone(), t.shallow_clone());
        Ok(t)
    }

    /// Rebuild one tensor: bounds-checked view of its storage, then a contiguous copy.
    fn tensor(&mut self, t: &TensorRef, cache: &mut HashMap<String, Tensor>) -> Result<Tensor> {
        check_view(t).map_err(|m| Error::format(&self.path, m))?;
        let storage = self.storage(&t.storage, cache)?;
        Ok(storage
            .f_as_strided(&t.size, &t.stride, t.offset)?
            .f_contiguous()?)
    }
}

/// Zip archives start with `PK\x03\x04`; the pre-1.6 torch.save format is a bare pickle.
fn check_magic(path: &Path) -> Result<()> {
    let mut head = [0u8; 4];
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?;
    if n == 4 && &head == b"PK\x03\x04" {
        return Ok(());
    }
    let msg = if n >= 2 && head[0] == 0x80 && (2..=5).contains(&head[1]) {
        "legacy (pre-1.6, non-zip) torch.save format is not supported; re-save it with a current PyTorch"
            .to_string()
    } else if n == 0 {
        "not a PyTorch file: the file is empty".to_string()
    } else {
        format!(
            "not a PyTorch file: no zip signature (starts with bytes {})",
            hex(&head[..n])
        )
    };
    Err(Error::format(path, msg))
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The archive folder holding `data.pkl` (`RN50/`, `archive/`, ...).
fn find_prefix(names: &[String]) -> std::result::Result<String, String> {
    let found: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with("/data.pkl") && n.matches('/').count() == 1)
        .collect();
    match found.as_slice() {
        [one] => Ok(one.trim_end_matches("data.pkl").to_string()),
        [] => Err("not a PyTorch file: the zip archive has no <archive>/data.pkl".to_string()),
        _ => Err("not a PyTorch file: the zip archive has several data.pkl".to_string()),
    }
}

/// The view must stay inside its storage.
fn check_view(t: &TensorRef) -> std::result::Result<(), String> {
    let bad = |why: &str| {
        Err(format!(
            "tensor view out of bounds ({why}): size {:?} stride {:?} offset {}",
            t.size, t.stride, t.offset
        ))
    };
    if t.size.len() != t.stride.len() {
        return bad("size and stride lengths differ");
    }
    if t.offset < 0 || t.size.iter().any(|&s| s < 0) || t.stride.iter().any(|&s| s < 0) {
        return bad("negative value");
    }
    if t.size.contains(&0) {
        return Ok(());
    }
    let mut last = t.offset as u64;
    for (&s, &st) in t.size.iter().zip(&t.stride) {
        let span = ((s - 1) as u64).checked_mul(st as u64);
        last = match span.and_then(|x| last.checked_add(x)) {
            Some(v) => v,
            None => return bad("overflow"),
        };
    }
    if last >= t.storage.numel {
        return bad(&format!("storage has {} elements", t.storage.numel));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Values

#[derive(Debug)]
struct StorageRef {
    kind: Kind,
    key: String,
    numel: u64,
}

#[derive(Debug)]
struct TensorRef {
    storage: Rc<StorageRef>,
    offset: i64,
    size: Vec<i64>,
    stride: Vec<i64>,
}

/// A TorchScript object: the attribute dict set by BUILD.
#[derive(Debug)]
struct Object {
    state: RefCell<Option<Value>>,
}

/// The only callables a pickle may name.
#[derive(Debug, Clone, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildTensor,
    RebuildParameter,
    Storage(Kind),
    /// `torch.jit._pickle.restore_type_tag(value, type)`: returns `value`.
    RestoreTypeTag,
    /// `torch.jit._pickle.build_*list(list)`: returns `list`.
    BuildList,
    /// A TorchScript class (`__torch__.*`): only `cls.__new__(cls)` + BUILD(state dict).
    ScriptClass(String),
}

impl Global {
    fn describe(&self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildTensor => "torch._utils._rebuild_tensor".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::Storage(k) => format!("a torch storage type ({k:?})"),
            Global::RestoreTypeTag => "torch.jit._pickle.restore_type_tag".into(),
            Global::BuildList => "torch.jit._pickle.build_*list".into(),
            Global::ScriptClass(name) => name.clone(),
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    None,
    /// Booleans and floats only occur as flags (`requires_grad`, `training`): values unused.
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Tuple(Rc<Vec<Value>>),
    List(Rc<RefCell<Vec<Value>>>),
    Dict(Rc<RefCell<Vec<(Value, Value)>>>),
    Global(Rc<Global>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    Object(Rc<Object>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "global",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
            Value::Object(_) => "object",
        }
    }
}

type PResult<T> = std::result::Result<T, String>;

/// Map a pickle GLOBAL to one of the allowed callables, or refuse it by name.
fn resolve_global(module: &str, name: &str) -> PResult<Global> {
    const LISTS: &[&str] = &[
        "build_intlist",
        "build_tensorlist",
        "build_doublelist",
        "build_boollist",
    ];
    let script_class = module == "__torch__" || module.starts_with("__torch__.");
    Ok(match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_tensor") => Global::RebuildTensor,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch.jit._pickle", "restore_type_tag") => Global::RestoreTypeTag,
        ("torch.jit._pickle", n) if LISTS.contains(&n) => Global::BuildList,
        _ if script_class => Global::ScriptClass(format!("{module}.{name}")),
        ("torch", n) => match storage_kind(n) {
            Some(kind) => Global::Storage(kind),
            None => return Err(refusal(module, name)),
        },
        _ => return Err(refusal(module, name)),
    })
}

fn refusal(module: &str, name: &str) -> String {
    format!(
        "refusing to load: the pickle calls {module}.{name} (only tensors and dicts are allowed)"
    )
}

fn storage_kind(name: &str) -> Option<Kind> {
    Some(match name {
        "FloatStorage" => Kind::Float,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "DoubleStorage" => Kind::Double,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        _ => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// The stack machine

struct Unpickler<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
}

/// Interpret a pickle (protocol 2..5 opcodes used by PyTorch) and return its root value.
fn parse_pickle(data: &[u8]) -> PResult<Value> {
    let mut u = Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    };
    loop {
        let at = u.pos;
        let op = u.byte()?;
        if op == b'.' {
            return u.pop();
        }
        u.step(op).map_err(|m| format!("{m} (pickle byte {at})"))?;
    }
}

impl Unpickler<'_> {
    fn take(&mut self, n: usize) -> PResult<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or_else(|| "the pickle ends early (truncated?)".to_string())?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> PResult<u8> {
        Ok(self.take(1)?[0])
    }

    fn le<const N: usize>(&mut self) -> PResult<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn line(&mut self) -> PResult<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("unterminated GLOBAL")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn string(&mut self, n: usize) -> PResult<Value> {
        let bytes = self.take(n)?;
        let s = std::str::from_utf8(bytes).map_err(|_| "a string is not valid UTF-8")?;
        Ok(Value::Str(Rc::from(s)))
    }

    fn pop(&mut self) -> PResult<Value> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn top(&self) -> PResult<&Value> {
        self.stack.last().ok_or_else(|| "stack underflow".into())
    }

    fn pop_mark(&mut self) -> PResult<Vec<Value>> {
        let m = self.marks.pop().ok_or("no MARK on the stack")?;
        Ok(self.stack.split_off(m))
    }

    fn memo_get(&self, i: u32) -> PResult<Value> {
        self.memo
            .get(&i)
            .cloned()
            .ok_or_else(|| format!("memo entry {i} is not set"))
    }

    fn memo_put(&mut self, i: u32) -> PResult<()> {
        let v = self.top()?.clone();
        self.memo.insert(i, v);
        Ok(())
    }

    fn push(&mut self, v: Value) -> PResult<()> {
        self.stack.push(v);
        Ok(())
    }

    fn step(&mut self, op: u8) -> PResult<()> {
        match op {
            0x80 => match self.byte()? {
                2..=5 => Ok(()),
                p => Err(format!("unsupported pickle protocol {p}")),
            },
            0x95 => self.take(8).map(|_| ()), // FRAME: framing is irrelevant in memory
            b'(' => {
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'}' => self.push(Value::Dict(Rc::default())),
            b']' => self.push(Value::List(Rc::default())),
            b')' => self.push(Value::Tuple(Rc::default())),
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(Rc::new(items)))
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() < floor + n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.push(Value::Tuple(Rc::new(items)))
            }
            b'X' => {
                let n = u32::from_le_bytes(self.le()?) as usize;
                let v = self.string(n)?;
                self.push(v)
            }
            0x8c => {
                let n = usize::from(self.byte()?);
                let v = self.string(n)?;
                self.push(v)
            }
            0x8d => {
                let n = usize::try_from(u64::from_le_bytes(self.le()?))
                    .map_err(|_| "string too long")?;
                let v = self.string(n)?;
                self.push(v)
            }
            b'K' => {
                let v = self.byte()?;
                self.push(Value::Int(i64::from(v)))
            }
            b'M' => {
                let v = u16::from_le_bytes(self.le()?);
                self.push(Value::Int(i64::from(v)))
            }
            b'J' => {
                let v = i32::from_le_bytes(self.le()?);
                self.push(Value::Int(i64::from(v)))
            }
            0x8a => {
                let v = self.long1()?;
                self.push(Value::Int(v))
            }
            b'G' => {
                self.take(8)?;
                self.push(Value::Float)
            }
            0x88 | 0x89 => self.push(Value::Bool),
            b'N' => self.push(Value::None),
            b's' => {
                let v = self.pop()?;
                let k = self.pop()?;
                self.set_items(vec![k, v])
            }
            b'u' => {
                let items = self.pop_mark()?;
                self.set_items(items)
            }
            b'a' => {
                let v = self.pop()?;
                self.append(vec![v])
            }
            b'e' => {
                let items = self.pop_mark()?;
                self.append(items)
            }
            b'q' => {
                let i = self.byte()?;
                self.memo_put(u32::from(i))
            }
            b'r' => {
                let i = u32::from_le_bytes(self.le()?);
                self.memo_put(i)
            }
            0x94 => {
                let i = u32::try_from(self.memo.len()).map_err(|_| "memo too large")?;
                self.memo_put(i)
            }
            b'h' => {
                let i = self.byte()?;
                let v = self.memo_get(u32::from(i))?;
                self.push(v)
            }
            b'j' => {
                let i = u32::from_le_bytes(self.le()?);
                let v = self.memo_get(i)?;
                self.push(v)
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                let g = resolve_global(&module, &name)?;
                self.push(Value::Global(Rc::new(g)))
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(m), Value::Str(n)) => {
                        let g = resolve_global(&m, &n)?;
                        self.push(Value::Global(Rc::new(g)))
                    }
                    _ => Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let func = self.pop()?;
                let v = reduce(&func, &args)?;
                self.push(v)
            }
            0x81 => {
                let args = self.pop()?;
                let cls = self.pop()?;
                let v = new_object(&cls, &args)?;
                self.push(v)
            }
            b'b' => {
                let state = self.pop()?;
                build(self.top()?, state)
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = persistent_load(&pid)?;
                self.push(v)
            }
            b'0' => self.pop().map(|_| ()),
            b'1' => self.pop_mark().map(|_| ()),
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)
            }
            _ => Err(format!(
                "unsupported pickle opcode 0x{op:02x} ('{}'); only tensors and dicts are allowed",
                (op as char).escape_default()
            )),
        }
    }

    fn long1(&mut self) -> PResult<i64> {
        let n = usize::from(self.byte()?);
        if n > 8 {
            return Err(format!("integer of {n} bytes is too large"));
        }
        let bytes = self.take(n)?;
        let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            [0xff; 8]
        } else {
            [0; 8]
        };
        buf[..n].copy_from_slice(bytes);
        Ok(i64::from_le_bytes(buf))
    }

    fn set_items(&mut self, items: Vec<Value>) -> PResult<()> {
        if items.len() % 2 != 0 {
            return Err("SETITEMS with an odd number of items".into());
        }
        let Value::Dict(d) = self.top()? else {
            return Err(format!("SETITEM on a {}", self.top()?.type_name()));
        };
        let mut d = d.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> PResult<()> {
        match self.top()? {
            Value::List(l) => {
                l.borrow_mut().extend(items);
                Ok(())
            }
            other => Err(format!("APPEND on a {}", other.type_name())),
        }
    }
}

fn tuple_items(args: &Value) -> PResult<&[Value]> {
    match args {
        Value::Tuple(t) => Ok(t),
        other => Err(format!(
            "call arguments are a {}, not a tuple",
            other.type_name()
        )),
    }
}

fn int_list(v: &Value, what: &str) -> PResult<Vec<i64>> {
    let items: Vec<Value> = match v {
        Value::Tuple(t) => t.to_vec(),
        Value::List(l) => l.borrow().clone(),
        other => return Err(format!("tensor {what} is a {}", other.type_name())),
    };
    items
        .iter()
        .map(|x| match x {
            Value::Int(i) => Ok(*i),
            other => Err(format!("tensor {what} holds a {}", other.type_name())),
        })
        .collect()
}

/// `_rebuild_tensor(_v2)(storage, storage_offset, size, stride, ...)`.
fn rebuild_tensor(args: &[Value]) -> PResult<Value> {
    let (Some(Value::Storage(storage)), Some(Value::Int(offset)), Some(size), Some(stride)) =
        (args.first(), args.get(1), args.get(2), args.get(3))
    else {
        return Err("_rebuild_tensor needs (storage, offset, size, stride)".into());
    };
    Ok(Value::Tensor(Rc::new(TensorRef {
        storage: storage.clone(),
        offset: *offset,
        size: int_list(size, "size")?,
        stride: int_list(stride, "stride")?,
    })))
}

/// Apply one of the allowed callables (REDUCE). Nothing here runs code from the file.
fn reduce(func: &Value, args: &Value) -> PResult<Value> {
    let Value::Global(g) = func else {
        return Err(format!("REDUCE on a {}", func.type_name()));
    };
    let args = tuple_items(args)?;
    match (&**g, args) {
        (Global::OrderedDict, []) => Ok(Value::Dict(Rc::default())),
        (Global::RebuildTensorV2, a) if (6..=7).contains(&a.len()) => rebuild_tensor(a),
        (Global::RebuildTensor, a) if a.len() == 4 => rebuild_tensor(a),
        (Global::RebuildParameter, [t @ Value::Tensor(_), Value::Bool, _, ..]) => Ok(t.clone()),
        (Global::RestoreTypeTag, [v, Value::Str(_)]) => Ok(v.clone()),
        (Global::BuildList, [l @ Value::List(_)]) => Ok(l.clone()),
        (g, a) => Err(format!(
            "refusing to call {} with {} argument(s)",
            g.describe(),
            a.len()
        )),
    }
}

/// NEWOBJ: only TorchScript classes, without arguments (`cls.__new__(cls)`).
fn new_object(cls: &Value, args: &Value) -> PResult<Value> {
    match (cls, tuple_items(args)?) {
        (Value::Global(g), []) => match &**g {
            Global::ScriptClass(_) => Ok(Value::Object(Rc::new(Object {
                state: RefCell::new(None),
            }))),
            other => Err(format!("refusing to instantiate {}", other.describe())),
        },
        (other, a) => Err(format!(
            "refusing NEWOBJ on a {} with {} argument(s)",
            other.type_name(),
            a.len()
        )),
    }
}

/// BUILD: a TorchScript object's attributes; an OrderedDict's `_metadata` is dropped.
fn build(target: &Value, state: Value) -> PResult<()> {
    match target {
        Value::Object(o) => {
            *o.state.borrow_mut() = Some(state);
            Ok(())
        }
        Value::Dict(_) => Ok(()),
        other => Err(format!("BUILD on a {}", other.type_name())),
    }
}

/// BINPERSID: `('storage', <torch.XStorage>, key, location, numel)`.
fn persistent_load(pid: &Value) -> PResult<Value> {
    let items = tuple_items(pid)?;
    match items {
        [Value::Str(tag), Value::Global(g), Value::Str(key), _location, Value::Int(numel)]
            if &**tag == "storage" =>
        {
            let Global::Storage(kind) = **g else {
                return Err(format!(
                    "persistent id names {}, not a storage type",
                    g.describe()
                ));
            };
            let numel = u64::try_from(*numel).map_err(|_| "negative storage size")?;
            if key.contains('/') || key.contains("..") {
                return Err(format!("bad storage key '{key}'"));
            }
            Ok(Value::Storage(Rc::new(StorageRef {
                kind,
                key: key.to_string(),
                numel,
            })))
        }
        _ => Err("unsupported persistent id (only tensor storages are allowed)".into()),
    }
}

/// Walk dicts and TorchScript objects, naming every tensor by its dotted path.
fn collect_tensors(
    v: &Value,
    prefix: &str,
    depth: usize,
    budget: &mut usize,
    out: &mut Vec<(String, Rc<TensorRef>)>,
) -> PResult<()> {
    if depth > MAX_DEPTH {
        return Err("objects nested too deeply (a reference cycle?)".into());
    }
    *budget = budget
        .checked_sub(1)
        .ok_or("too many objects (shared references repeated over and over?)")?;
    let join = |k: &str| {
        if prefix.is_empty() {
            k.to_string()
        } else {
            format!("{prefix}.{k}")
        }
    };
    match v {
        Value::Tensor(t) => out.push((prefix.to_string(), t.clone())),
        Value::Dict(d) => {
            for (k, v) in d.borrow().iter() {
                if let Value::Str(k) = k {
                    collect_tensors(v, &join(k), depth + 1, budget, out)?;
                }
            }
        }
        Value::Object(o) => {
            if let Some(state) = o.state.borrow().as_ref() {
                collect_tensors(state, prefix, depth + 1, budget, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dangerous_globals_are_refused_by_name() {
        let p = b"cos\nsystem\n(S'echo pwned'\ntR.";
        let e = parse_pickle(p).unwrap_err();
        assert!(e.contains("os.system"), "{e}");
        let p = b"\x80\x02cbuiltins\neval\n.";
        assert!(parse_pickle(p).unwrap_err().contains("builtins.eval"));
        let p = b"\x80\x02ctorch.storage\n_load_from_bytes\n.";
        assert!(parse_pickle(p)
            .unwrap_err()
            .contains("torch.storage._load_from_bytes"));
        // STACK_GLOBAL goes through the same check.
        let p = b"\x80\x04\x8c\x02os\x8c\x06system\x93.";
        assert!(parse_pickle(p).unwrap_err().contains("os.system"));
    }

    #[test]
    fn small_values_and_memo() {
        // {'a': [1, -2, 300, 2**40], 'b': (True, None, 1.5)}
        let p = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01]q\x02(K\x01J\xfe\xff\xff\xffM,\x01\x8a\x06\x00\x00\x00\x00\x00\x01eX\x01\x00\x00\x00b\x88NG?\xf8\x00\x00\x00\x00\x00\x00\x87u.";
        let v = parse_pickle(p).unwrap();
        let Value::Dict(d) = v else {
            panic!("not a dict")
        };
        let d = d.borrow();
        let Value::List(l) = &d[0].1 else { panic!() };
        let ints: Vec<i64> = l
            .borrow()
            .iter()
            .map(|x| if let Value::Int(i) = x { *i } else { 0 })
            .collect();
        assert_eq!(ints, [1, -2, 300, 1 << 40]);
        let Value::Tuple(t) = &d[1].1 else { panic!() };
        assert!(matches!(t[..], [Value::Bool, Value::None, Value::Float]));
    }

    #[test]
    fn truncated_and_unknown_opcodes_are_errors() {
        assert!(parse_pickle(b"\x80\x02X\x05\x00\x00\x00ab")
            .unwrap_err()
            .contains("ends early"));
        assert!(parse_pickle(b"\x80\x02i")
            .unwrap_err()
            .contains("unsupported pickle opcode"));
        assert!(parse_pickle(b"\x80\x02h\x07.")
            .unwrap_err()
            .contains("memo entry 7"));
        assert!(parse_pickle(b"\x80\x02.")
            .unwrap_err()
            .contains("underflow"));
    }

    #[test]
    fn views_outside_their_storage_are_refused() {
        let s = Rc::new(StorageRef {
            kind: Kind::Float,
            key: "0".into(),
            numel: 12,
        });
        let ok = TensorRef {
            storage: s.clone(),
            offset: 0,
            size: vec![3, 4],
            stride: vec![4, 1],
        };
        assert!(check_view(&ok).is_ok());
        let t = TensorRef {
            storage: s.clone(),
            offset: 1,
            size: vec![3, 4],
            stride: vec![4, 1],
        };
        assert!(check_view(&t).is_err());
        let t = TensorRef {
            storage: s,
            offset: 0,
            size: vec![2],
            stride: vec![i64::MAX],
        };
        assert!(check_view(&t).is_err());
    }

    #[test]
    fn cycles_and_exponential_sharing_are_bounded() {
        // d = {}; d['a'] = d  (a cycle)
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.";
        let root = parse_pickle(p).unwrap();
        let (mut budget, mut out) = (MAX_VISITS, Vec::new());
        let e = collect_tensors(&root, "", 0, &mut budget, &mut out).unwrap_err();
        assert!(e.contains("nested too deeply"), "{e}");
        // d0 = {}; d_{i+1} = {'a': d_i, 'b': d_i}, 40 levels: 2^40 paths.
        let mut p = b"\x80\x02}".to_vec();
        for _ in 0..40 {
            // memo[0] = d_i; pop it; push {}; MARK 'a' d_i 'b' d_i SETITEMS
            p.extend_from_slice(b"q\x000}(X\x01\x00\x00\x00ah\x00X\x01\x00\x00\x00bh\x00u");
        }
        p.push(b'.');
        let root = parse_pickle(&p).unwrap();
        let (mut budget, mut out) = (MAX_VISITS, Vec::new());
        let e = collect_tensors(&root, "", 0, &mut budget, &mut out).unwrap_err();
        assert!(e.contains("too many objects"), "{e}");
    }
}
