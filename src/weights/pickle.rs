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

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{BufReader, Cursor, Read, Seek};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use tch::{Kind, Tensor};
use zip::ZipArchive;

use super::TensorMap;
use crate::error::{Error, Result};

/// Deepest nesting of dicts/modules walked when collecting tensors.
const MAX_DEPTH: usize = 64;
/// Most dict entries / objects visited when collecting tensors (shared references in a
/// hostile pickle could otherwise make the walk exponential).
const MAX_VISITS: usize = 4_000_000;
/// Most dimensions of a tensor.
const MAX_DIMS: usize = 64;

/// Bounds on what a PyTorch file may make the reader build, so that a small hostile file
/// (deep nesting, a pickle that copies one value over and over, a zip bomb, views that
/// repeat one storage) is refused with an error instead of exhausting the stack or memory.
/// The defaults are far above what real files need: the pickles of the test fixtures
/// (a TorchScript CLIP-like archive, a torch.save checkpoint) build under 8000 values,
/// nest at most 12 deep and keep under 400 values on the stack; torch.save and torch.jit
/// store tensor data uncompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest `data.pkl` (the pickle itself, not the tensor data).
    pub pickle_bytes: u64,
    /// Values the unpickler may create in all: every value pushed or memoized and every
    /// tensor dimension (each costs memory that a copy of a reference multiplies).
    pub values: usize,
    /// Values and marks on the unpickler's stack at once.
    pub stack: usize,
    /// Memo entries.
    pub memo: usize,
    /// How deeply tuples, lists, dicts and objects may nest.
    pub nesting: usize,
    /// Bytes the archive may unpack to, and separately the tensor data read plus the copies
    /// strided views need. `None`: 4 times the file's size plus 1 MiB (torch.save stores
    /// tensor data uncompressed, once per storage).
    pub data_bytes: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pickle_bytes: 64 << 20,
            values: 4_000_000,
            stack: 1_000_000,
            memo: 1_000_000,
            nesting: 256,
            data_bytes: None,
        }
    }
}

impl Limits {
    fn data_bytes_for(&self, file_len: u64) -> u64 {
        self.data_bytes
            .unwrap_or_else(|| file_len.saturating_mul(4).saturating_add(1 << 20))
    }
}

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
/// unpacked into tensors), within the default [`Limits`]. Every entry's CRC-32 is checked.
pub fn read_torch_file(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<TorchFile> {
    read_torch_file_with(path, keep, &Limits::default())
}

/// [`read_torch_file`] within `limits`.
pub fn read_torch_file_with(
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<TorchFile> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 4];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    check_magic(&head[..n], path)?;
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    file.rewind().map_err(|e| Error::io(path, e))?;
    read_archive(BufReader::new(file), len, path, keep, limits)
}

/// The same for a file already in memory (`path` names it in errors).
pub fn parse_torch_file(
    bytes: &[u8],
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<TorchFile> {
    check_magic(&bytes[..bytes.len().min(4)], path)?;
    read_archive(Cursor::new(bytes), bytes.len() as u64, path, keep, limits)
}

/// Interpret a `data.pkl` as [`read_torch_file`] does (same limits and checks, views
/// included) and return the dotted names of its tensors, without reading tensor data.
/// For tests and the fuzz harness.
#[doc(hidden)]
pub fn pickle_tensor_names(
    bytes: &[u8],
    limits: &Limits,
) -> std::result::Result<Vec<String>, String> {
    let root = parse_pickle_with(bytes, limits)?;
    let mut refs = Vec::new();
    let mut budget = MAX_VISITS;
    collect_tensors(&root, "", 0, &mut budget, &mut refs)?;
    refs.into_iter()
        .map(|(name, t)| check_view(&t).map(|_| name))
        .collect()
}

fn read_archive<R: Read + Seek>(
    reader: R,
    file_len: u64,
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
    limits: &Limits,
) -> Result<TorchFile> {
    let mut archive = Archive::open(reader, file_len, path, limits)?;
    let bytes = archive.read_entry("data.pkl", limits.pickle_bytes)?;
    let root = parse_pickle_with(&bytes, limits).map_err(|m| Error::format(path, m))?;
    let mut refs = Vec::new();
    let mut budget = MAX_VISITS;
    collect_tensors(&root, "", 0, &mut budget, &mut refs).map_err(|m| Error::format(path, m))?;
    drop(root);
    let mut tensors = TensorMap::new();
    let mut storages = HashMap::new();
    for (name, tref) in refs.into_iter().filter(|(n, _)| keep(n)) {
        let t = archive.tensor(&tref, &mut storages)?;
        tensors.insert(name, t);
    }
    drop(storages);
    archive.verify_unread_entries()?;
    Ok(TorchFile {
        kind: archive.kind,
        tensors,
    })
}

// ---------------------------------------------------------------------------------------------
// The zip container

struct Archive<R> {
    path: PathBuf,
    zip: ZipArchive<R>,
    /// `<archive>/`: every entry lives under one top-level folder.
    prefix: String,
    kind: ArchiveKind,
    big_endian: bool,
    /// Bytes of tensor data (storages and view copies) still allowed.
    data_budget: u64,
    /// Entries read (and so CRC-checked) so far.
    read: HashSet<String>,
}

impl<R: Read + Seek> Archive<R> {
    fn open(reader: R, file_len: u64, path: &Path, limits: &Limits) -> Result<Archive<R>> {
        let zip = ZipArchive::new(reader).map_err(|e| {
            Error::format(
                path,
                format!("not a PyTorch file: truncated or corrupt zip archive ({e})"),
            )
        })?;
        let data_budget = limits.data_bytes_for(file_len);
        let mut unpacked = 0u64;
        for i in 0..zip.len() {
            let size = zip
                .by_index_data(i)
                .map(|e| e.size())
                .map_err(|e| Error::format(path, format!("corrupt zip archive: entry {i}: {e}")))?;
            unpacked = unpacked.saturating_add(size);
        }
        if unpacked > data_budget {
            return Err(Error::format(
                path,
                format!(
                    "the archive unpacks to {unpacked} bytes, more than the {data_budget} allowed \
                     for a {file_len}-byte file (a zip bomb?)"
                ),
            ));
        }
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
            data_budget,
            read: HashSet::new(),
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

    /// Read `<prefix><name>`, at most `limit` bytes, and check its CRC-32.
    fn read_entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let full = format!("{}{name}", self.prefix);
        let path = &self.path;
        let mut entry = self.zip.by_name(&full).map_err(|e| {
            Error::format(path, format!("cannot read {full} from the archive: {e}"))
        })?;
        if entry.size() > limit {
            return Err(Error::format(
                path,
                format!("{full} is {} bytes, more than {limit}", entry.size()),
            ));
        }
        // Read to the end, not just `size` bytes: the zip reader checks the CRC-32 (and that
        // the entry holds no more than its declared size) when it reaches the end.
        let mut buf = Vec::with_capacity(entry.size() as usize);
        entry
            .read_to_end(&mut buf)
            .map_err(|e| entry_error(path, &full, e))?;
        if buf.len() as u64 > limit {
            return Err(Error::format(
                path,
                format!("{full} holds more than {limit} bytes"),
            ));
        }
        self.read.insert(full);
        Ok(buf)
    }

    /// Check the CRC-32 of every entry not read yet (layer4, the text tower, TorchScript
    /// code, ...): a damaged file is refused even where the damage is in parts not used.
    fn verify_unread_entries(&mut self) -> Result<()> {
        for i in 0..self.zip.len() {
            let name = match self.zip.name_for_index(i) {
                Some(Ok(n)) => n.into_owned(),
                _ => format!("entry {i}"),
            };
            if self.read.contains(&name) {
                continue;
            }
            let mut entry = self.zip.by_index(i).map_err(|e| {
                Error::format(
                    &self.path,
                    format!("cannot read {name} from the archive: {e}"),
                )
            })?;
            if entry.is_dir() {
                continue;
            }
            std::io::copy(&mut entry, &mut std::io::sink())
                .map_err(|e| entry_error(&self.path, &name, e))?;
        }
        Ok(())
    }

    fn spend(&mut self, bytes: u64, what: &str) -> Result<()> {
        self.data_budget = self.data_budget.checked_sub(bytes).ok_or_else(|| {
            Error::format(
                &self.path,
                format!(
                    "{what} would take the tensor data past the limit for this file's size \
                     (storages shared by many views, or a zip bomb?)"
                ),
            )
        })?;
        Ok(())
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
        self.spend(bytes, &format!("storage data/{} ({bytes} bytes)", s.key))?;
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
        let numel = check_view(t).map_err(|m| Error::format(&self.path, m))?;
        let storage = self.storage(&t.storage, cache)?;
        let view = storage.f_as_strided(&t.size, &t.stride, t.offset)?;
        if !view.is_contiguous() {
            let bytes = numel * t.storage.kind.elt_size_in_bytes() as u64;
            self.spend(
                bytes,
                &format!("a strided view of storage {}", t.storage.key),
            )?;
        }
        Ok(view.f_contiguous()?)
    }
}

fn entry_error(path: &Path, name: &str, e: std::io::Error) -> Error {
    let why = if e.to_string().contains("checksum") {
        "CRC-32 mismatch: the file is damaged".to_string()
    } else {
        format!("{e} (truncated or damaged archive?)")
    };
    Error::format(path, format!("cannot read {name}: {why}"))
}

/// Zip archives start with `PK\x03\x04`; the pre-1.6 torch.save format is a bare pickle.
/// `head`: the file's first (up to) 4 bytes.
fn check_magic(head: &[u8], path: &Path) -> Result<()> {
    let n = head.len();
    if head == b"PK\x03\x04" {
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
            hex(head)
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

/// The view must stay inside its storage and have no more elements than it (a zero-stride
/// view could otherwise make a huge tensor of one stored number). Returns its element count.
fn check_view(t: &TensorRef) -> std::result::Result<u64, String> {
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
    let numel = t
        .size
        .iter()
        .try_fold(1u64, |n, &s| n.checked_mul(s as u64));
    let numel = match numel {
        Some(n) if n <= t.storage.numel => n,
        _ => {
            return bad(&format!(
                "more elements than its storage's {}",
                t.storage.numel
            ))
        }
    };
    if numel == 0 {
        return Ok(0);
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
    Ok(numel)
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

/// A tuple and how deeply it nests.
#[derive(Debug, Default)]
struct Tuple {
    items: Vec<Value>,
    depth: usize,
}

/// A list, a dict or a TorchScript object (its attributes, set by BUILD), which the pickle
/// fills after creating it. Once placed inside another value it is sealed: it may not change
/// any more. So the depth it records stays true (nesting is bounded when values are built,
/// and dropping them cannot overflow the stack) and no value can contain itself.
#[derive(Debug, Default)]
struct Filled<T> {
    items: RefCell<T>,
    depth: Cell<usize>,
    sealed: Cell<bool>,
}

impl<T: Default> Filled<T> {
    fn new() -> Rc<Self> {
        Rc::new(Filled {
            items: RefCell::default(),
            depth: Cell::new(1),
            sealed: Cell::new(false),
        })
    }
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
    Tuple(Rc<Tuple>),
    List(Rc<Filled<Vec<Value>>>),
    Dict(Rc<Filled<Vec<(Value, Value)>>>),
    Global(Rc<Global>),
    Storage(Rc<StorageRef>),
    Tensor(Rc<TensorRef>),
    Object(Rc<Filled<Option<Value>>>),
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

    /// How many containers deep this value goes (0 for a scalar, 1 for an empty tuple).
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(t) => t.depth,
            Value::List(l) => l.depth.get(),
            Value::Dict(d) => d.depth.get(),
            Value::Object(o) => o.depth.get(),
            _ => 0,
        }
    }

    /// This value is being placed inside another one: from now on it may not change.
    fn seal(&self) {
        match self {
            Value::List(l) => l.sealed.set(true),
            Value::Dict(d) => d.sealed.set(true),
            Value::Object(o) => o.sealed.set(true),
            _ => {}
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
    limits: &'a Limits,
    /// Values (pushes, memo entries, tensor dimensions) still allowed.
    values_left: usize,
}

/// Interpret a pickle (protocol 2..5 opcodes used by PyTorch) and return its root value.
#[cfg(test)]
fn parse_pickle(data: &[u8]) -> PResult<Value> {
    parse_pickle_with(data, &Limits::default())
}

/// [`parse_pickle`] within `limits`.
fn parse_pickle_with(data: &[u8], limits: &Limits) -> PResult<Value> {
    let mut u = Unpickler {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        limits,
        values_left: limits.values,
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
        if self.memo.len() >= self.limits.memo && !self.memo.contains_key(&i) {
            return Err(format!(
                "the pickle memoizes more than {} values",
                self.limits.memo
            ));
        }
        self.charge(1)?;
        self.memo.insert(i, v);
        Ok(())
    }

    fn push(&mut self, v: Value) -> PResult<()> {
        if self.stack.len() + self.marks.len() >= self.limits.stack {
            return Err(format!(
                "the pickle's stack grows past {} values",
                self.limits.stack
            ));
        }
        self.charge(1)?;
        self.stack.push(v);
        Ok(())
    }

    /// Count `n` values against the budget: copies of references, memo entries and tensor
    /// dimensions cost memory that a small pickle could otherwise multiply without bound.
    fn charge(&mut self, n: usize) -> PResult<()> {
        self.values_left = self.values_left.checked_sub(n).ok_or_else(|| {
            format!(
                "the pickle builds more than {} values (a decompression bomb?)",
                self.limits.values
            )
        })?;
        Ok(())
    }

    /// `items` are being placed in a container that nests `base` deep so far: its new depth
    /// (bounded by the limit). The items are sealed (see [`Filled`]).
    fn contain<'v>(
        &self,
        items: impl IntoIterator<Item = &'v Value>,
        base: usize,
    ) -> PResult<usize> {
        let mut depth = base;
        for v in items {
            v.seal();
            depth = depth.max(v.depth() + 1);
        }
        if depth > self.limits.nesting {
            return Err(format!(
                "values nested more than {} deep",
                self.limits.nesting
            ));
        }
        Ok(depth)
    }

    fn tuple(&mut self, items: Vec<Value>) -> PResult<()> {
        let depth = self.contain(&items, 1)?;
        self.push(Value::Tuple(Rc::new(Tuple { items, depth })))
    }

    fn step(&mut self, op: u8) -> PResult<()> {
        match op {
            0x80 | 0x95 => self.step_header(op),
            b'('
            | b'}'
            | b']'
            | b')'
            | b't'
            | 0x85..=0x87
            | b's'
            | b'u'
            | b'a'
            | b'e'
            | b'0'
            | b'1'
            | b'2' => self.step_stack(op),
            b'X' | 0x8c | 0x8d | b'K' | b'M' | b'J' | 0x8a | b'G' | 0x88 | 0x89 | b'N' => {
                self.step_literal(op)
            }
            b'q' | b'r' | 0x94 | b'h' | b'j' => self.step_memo(op),
            b'c' | 0x93 | b'R' | 0x81 | b'b' | b'Q' => self.step_object(op),
            _ => Err(unsupported_opcode(op)),
        }
    }

    /// The protocol header and framing.
    fn step_header(&mut self, op: u8) -> PResult<()> {
        match op {
            0x80 => match self.byte()? {
                2..=5 => Ok(()),
                p => Err(format!("unsupported pickle protocol {p}")),
            },
            0x95 => self.take(8).map(|_| ()), // FRAME: framing is irrelevant in memory
            _ => Err(unsupported_opcode(op)),
        }
    }

    /// Marks, containers and the stack itself.
    fn step_stack(&mut self, op: u8) -> PResult<()> {
        match op {
            b'(' => {
                if self.stack.len() + self.marks.len() >= self.limits.stack {
                    return Err(format!(
                        "the pickle's stack grows past {} values",
                        self.limits.stack
                    ));
                }
                self.charge(1)?;
                self.marks.push(self.stack.len());
                Ok(())
            }
            b'}' => self.push(Value::Dict(Filled::new())),
            b']' => self.push(Value::List(Filled::new())),
            b')' => self.tuple(Vec::new()),
            b't' => {
                let items = self.pop_mark()?;
                self.tuple(items)
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let floor = self.marks.last().copied().unwrap_or(0);
                if self.stack.len() < floor + n {
                    return Err("stack underflow".into());
                }
                let items = self.stack.split_off(self.stack.len() - n);
                self.tuple(items)
            }
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
            b'0' => self.pop().map(|_| ()),
            b'1' => self.pop_mark().map(|_| ()),
            b'2' => {
                let v = self.top()?.clone();
                self.push(v)
            }
            _ => Err(unsupported_opcode(op)),
        }
    }

    /// Strings, integers, floats (skipped), booleans and None.
    fn step_literal(&mut self, op: u8) -> PResult<()> {
        match op {
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
            _ => Err(unsupported_opcode(op)),
        }
    }

    /// The memo: store and fetch.
    fn step_memo(&mut self, op: u8) -> PResult<()> {
        match op {
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
            _ => Err(unsupported_opcode(op)),
        }
    }

    /// Globals, calls, objects, state and persistent ids (tensor storages).
    fn step_object(&mut self, op: u8) -> PResult<()> {
        match op {
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
                let v = self.reduce(&func, &args)?;
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
                self.build(state)
            }
            b'Q' => {
                let pid = self.pop()?;
                let v = persistent_load(&pid)?;
                self.push(v)
            }
            _ => Err(unsupported_opcode(op)),
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
        let Value::Dict(d) = self.top()?.clone() else {
            return Err(format!("SETITEM on a {}", self.top()?.type_name()));
        };
        let depth = self.contain(&items, d.depth.get())?;
        check_unsealed(&d.sealed, "dict")?;
        d.depth.set(depth);
        let mut d = d.items.borrow_mut();
        let mut it = items.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            d.push((k, v));
        }
        Ok(())
    }

    fn append(&mut self, items: Vec<Value>) -> PResult<()> {
        let Value::List(l) = self.top()?.clone() else {
            return Err(format!("APPEND on a {}", self.top()?.type_name()));
        };
        let depth = self.contain(&items, l.depth.get())?;
        check_unsealed(&l.sealed, "list")?;
        l.depth.set(depth);
        l.items.borrow_mut().extend(items);
        Ok(())
    }

    /// BUILD: a TorchScript object's attributes; an OrderedDict's `_metadata` is dropped.
    fn build(&mut self, state: Value) -> PResult<()> {
        match self.top()?.clone() {
            Value::Object(o) => {
                let depth = self.contain([&state], o.depth.get())?;
                check_unsealed(&o.sealed, "object")?;
                o.depth.set(depth);
                *o.items.borrow_mut() = Some(state);
                Ok(())
            }
            Value::Dict(_) => Ok(()),
            other => Err(format!("BUILD on a {}", other.type_name())),
        }
    }

    /// Apply one of the allowed callables (REDUCE). Nothing here runs code from the file.
    fn reduce(&mut self, func: &Value, args: &Value) -> PResult<Value> {
        let Value::Global(g) = func else {
            return Err(format!("REDUCE on a {}", func.type_name()));
        };
        let args = tuple_items(args)?;
        match (&**g, args) {
            (Global::OrderedDict, []) => Ok(Value::Dict(Filled::new())),
            (Global::RebuildTensorV2, a) if (6..=7).contains(&a.len()) => self.rebuild_tensor(a),
            (Global::RebuildTensor, a) if a.len() == 4 => self.rebuild_tensor(a),
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

    /// `_rebuild_tensor(_v2)(storage, storage_offset, size, stride, ...)`.
    fn rebuild_tensor(&mut self, args: &[Value]) -> PResult<Value> {
        let (Some(Value::Storage(storage)), Some(Value::Int(offset)), Some(size), Some(stride)) =
            (args.first(), args.get(1), args.get(2), args.get(3))
        else {
            return Err("_rebuild_tensor needs (storage, offset, size, stride)".into());
        };
        let size = int_list(size, "size")?;
        let stride = int_list(stride, "stride")?;
        self.charge(size.len() + stride.len())?;
        Ok(Value::Tensor(Rc::new(TensorRef {
            storage: storage.clone(),
            offset: *offset,
            size,
            stride,
        })))
    }
}

fn check_unsealed(sealed: &Cell<bool>, what: &str) -> PResult<()> {
    if sealed.get() {
        return Err(format!(
            "the pickle changes a {what} after placing it inside another value \
             (torch.save never does)"
        ));
    }
    Ok(())
}

fn tuple_items(args: &Value) -> PResult<&[Value]> {
    match args {
        Value::Tuple(t) => Ok(&t.items),
        other => Err(format!(
            "call arguments are a {}, not a tuple",
            other.type_name()
        )),
    }
}

/// A tensor's size or stride: a tuple or list of at most [`MAX_DIMS`] ints.
fn int_list(v: &Value, what: &str) -> PResult<Vec<i64>> {
    let get = |items: &[Value]| {
        if items.len() > MAX_DIMS {
            return Err(format!(
                "tensor {what} has {} dimensions, more than {MAX_DIMS}",
                items.len()
            ));
        }
        items
            .iter()
            .map(|x| match x {
                Value::Int(i) => Ok(*i),
                other => Err(format!("tensor {what} holds a {}", other.type_name())),
            })
            .collect()
    };
    match v {
        Value::Tuple(t) => get(&t.items),
        Value::List(l) => get(&l.items.borrow()),
        other => Err(format!("tensor {what} is a {}", other.type_name())),
    }
}

/// NEWOBJ: only TorchScript classes, without arguments (`cls.__new__(cls)`).
fn new_object(cls: &Value, args: &Value) -> PResult<Value> {
    match (cls, tuple_items(args)?) {
        (Value::Global(g), []) => match &**g {
            Global::ScriptClass(_) => Ok(Value::Object(Filled::new())),
            other => Err(format!("refusing to instantiate {}", other.describe())),
        },
        (other, a) => Err(format!(
            "refusing NEWOBJ on a {} with {} argument(s)",
            other.type_name(),
            a.len()
        )),
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
            for (k, v) in d.items.borrow().iter() {
                if let Value::Str(k) = k {
                    collect_tensors(v, &join(k), depth + 1, budget, out)?;
                }
            }
        }
        Value::Object(o) => {
            if let Some(state) = o.items.borrow().as_ref() {
                collect_tensors(state, prefix, depth + 1, budget, out)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The error for an opcode this reader does not execute.
fn unsupported_opcode(op: u8) -> String {
    format!(
        "unsupported pickle opcode 0x{op:02x} ('{}'); only tensors and dicts are allowed",
        (op as char).escape_default()
    )
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
        let d = d.items.borrow();
        let Value::List(l) = &d[0].1 else { panic!() };
        let ints: Vec<i64> = l
            .items
            .borrow()
            .iter()
            .map(|x| if let Value::Int(i) = x { *i } else { 0 })
            .collect();
        assert_eq!(ints, [1, -2, 300, 1 << 40]);
        let Value::Tuple(t) = &d[1].1 else { panic!() };
        assert!(matches!(
            t.items[..],
            [Value::Bool, Value::None, Value::Float]
        ));
    }

    #[test]
    fn the_budgets_bound_what_a_pickle_builds() {
        let small = Limits {
            values: 100,
            stack: 50,
            memo: 10,
            nesting: 8,
            ..Limits::default()
        };
        let ok = b"\x80\x02}q\x00(X\x01\x00\x00\x00a)\x85\x85u.";
        parse_pickle_with(ok, &small).unwrap();
        // 60 values on the stack at once.
        let mut p = b"\x80\x02(".to_vec();
        p.extend(std::iter::repeat_n(b'N', 60));
        p.extend_from_slice(b"t.");
        let e = parse_pickle_with(&p, &small).unwrap_err();
        assert!(e.contains("stack grows past 50"), "{e}");
        // 200 values one after the other (DUP, POP).
        let mut p = b"\x80\x02N".to_vec();
        p.extend(b"20".repeat(200));
        p.push(b'.');
        let e = parse_pickle_with(&p, &small).unwrap_err();
        assert!(e.contains("builds more than 100 values"), "{e}");
        // 20 memo entries.
        let mut p = b"\x80\x02N".to_vec();
        (0..20u8).for_each(|i| p.extend([b'q', i]));
        p.push(b'.');
        let e = parse_pickle_with(&p, &small).unwrap_err();
        assert!(e.contains("memoizes more than 10"), "{e}");
        // Rewriting one memo entry is not a new one.
        let mut p = b"\x80\x02N".to_vec();
        (0..20).for_each(|_| p.extend(b"q\x00"));
        p.push(b'.');
        parse_pickle_with(&p, &small).unwrap();
        // Nine tuples deep; and a list nested by APPEND counts the same way.
        let mut p = b"\x80\x02)".to_vec();
        p.extend([0x85; 8]);
        p.push(b'.');
        let e = parse_pickle_with(&p, &small).unwrap_err();
        assert!(e.contains("nested more than 8 deep"), "{e}");
        let mut p = b"\x80\x02])".to_vec();
        p.extend([0x85; 7]);
        p.extend(b"a.");
        let e = parse_pickle_with(&p, &small).unwrap_err();
        assert!(e.contains("nested more than 8 deep"), "{e}");
        // 65 dimensions.
        let mut p = b"\x80\x02ctorch._utils\n_rebuild_tensor\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQK\x00(".to_vec();
        p.extend(b"K\x01".repeat(65));
        p.extend(b"t(ttR.");
        let e = parse_pickle(&p).unwrap_err();
        assert!(e.contains("65 dimensions, more than 64"), "{e}");
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
        // d = {}; d['a'] = d  (a cycle): a value placed in another may not change any more.
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.";
        let e = parse_pickle(p).unwrap_err();
        assert!(e.contains("after placing it inside another value"), "{e}");
        // d0 = {}; d_{i+1} = {'a': d_i}, 100 levels: deeper than the walk goes.
        let mut p = b"\x80\x02}".to_vec();
        for _ in 0..100 {
            p.extend_from_slice(b"q\x000}X\x01\x00\x00\x00ah\x00s");
        }
        p.push(b'.');
        let root = parse_pickle(&p).unwrap();
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
