//! Weight files. The project's format is safetensors with the model `Config` and provenance
//! in `__metadata__`; loading is strict (every name, shape and dtype checked).
//!
//! - [`import`] (feature `import`): OpenAI's `RN50.pt` and the authors' `net_g_latest.pth`
//!   (restricted unpickler).
//! - [`resolve`]: models by name (`--model NAME`, `model=NAME`) and the model directories.
//! - [`average`]: the mean of several weight files of one model (weight averaging).
//! - [`fetch`] (feature `fetch`): `weights fetch clip-rn50` (download, resume, SHA-256 check,
//!   conversion).

pub mod average;
#[cfg(feature = "fetch")]
pub mod fetch;
#[cfg(feature = "import")]
pub mod import;
#[cfg(feature = "import")]
pub mod pickle;
pub mod resolve;
mod spec;

pub use spec::{model_tensor_specs, TensorSpec};

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors, View};
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::{ClipDenoise, Config};

/// Named tensors, sorted by name.
pub type TensorMap = BTreeMap<String, Tensor>;

/// `__metadata__` keys written by this project.
pub const META_FORMAT: &str = "format";
pub const META_CONFIG: &str = "clipdenoise.config";
pub const META_SOURCE: &str = "clipdenoise.source";
pub const META_TRAINING_DATA: &str = "clipdenoise.training_data";
pub const META_STEPS: &str = "clipdenoise.steps";
pub const FORMAT_TAG: &str = "clipdenoise-v1";

/// Where a weights file came from; stored next to the config in the file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Provenance {
    pub source: String,
    pub training_data: String,
    pub steps: u64,
}

fn kind_to_dtype(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Double => Dtype::F64,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Uint8 => Dtype::U8,
        _ => return None,
    })
}

fn dtype_to_kind(d: Dtype) -> Option<Kind> {
    Some(match d {
        Dtype::F32 => Kind::Float,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::F64 => Kind::Double,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::U8 => Kind::Uint8,
        _ => return None,
    })
}

/// Read every tensor of a safetensors file onto the CPU, with its `__metadata__`.
pub fn read_safetensors(path: &Path) -> Result<(TensorMap, HashMap<String, String>)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_safetensors(&bytes, path)
}

/// Parse safetensors bytes (`path` names the source in errors).
pub fn parse_safetensors(
    bytes: &[u8],
    path: &Path,
) -> Result<(TensorMap, HashMap<String, String>)> {
    let bad = |msg: String| Error::format(path, format!("not a valid safetensors file: {msg}"));
    if bytes.len() < 8 {
        return Err(bad(format!("only {} bytes", bytes.len())));
    }
    let (_, meta) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
    let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let kind = dtype_to_kind(view.dtype()).ok_or_else(|| {
            bad(format!(
                "tensor {name} has unsupported dtype {:?}",
                view.dtype()
            ))
        })?;
        let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
        let t = Tensor::f_from_data_size(view.data(), &shape, kind)?;
        out.insert(name, t);
    }
    Ok((out, meta.metadata().clone().unwrap_or_default()))
}

struct OwnedView {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &OwnedView {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

fn owned_view(name: &str, t: &Tensor) -> Result<OwnedView> {
    let t = t.f_to_device(Device::Cpu)?.f_contiguous()?;
    let dtype = kind_to_dtype(t.kind())
        .ok_or_else(|| Error::Input(format!("tensor {name}: cannot store {:?}", t.kind())))?;
    let numel = t.numel();
    let mut data = vec![0u8; numel * t.kind().elt_size_in_bytes()];
    if numel > 0 {
        t.f_copy_data_u8(&mut data, numel)?;
    }
    Ok(OwnedView {
        dtype,
        shape: t.size().iter().map(|&s| s as usize).collect(),
        data,
    })
}

/// Write tensors + metadata as safetensors, atomically (temporary file, then rename).
pub fn write_safetensors(
    path: &Path,
    tensors: &TensorMap,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views: Vec<(String, OwnedView)> = tensors
        .iter()
        .map(|(n, t)| Ok((n.clone(), owned_view(n, t)?)))
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views.iter().map(|(n, v)| (n, v)), Some(metadata))
        .map_err(|e| Error::format(path, e.to_string()))?;
    write_atomic(path, &bytes)
}

/// Write a file through `<path>.tmp` + rename so a crash never leaves a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The model's metadata block: format tag, config (JSON) and provenance.
pub fn model_metadata(config: &Config, prov: &Provenance) -> HashMap<String, String> {
    HashMap::from([
        (META_FORMAT.to_string(), FORMAT_TAG.to_string()),
        (
            META_CONFIG.to_string(),
            serde_json::to_string(config).expect("config serialises"),
        ),
        (META_SOURCE.to_string(), prov.source.clone()),
        (META_TRAINING_DATA.to_string(), prov.training_data.clone()),
        (META_STEPS.to_string(), prov.steps.to_string()),
    ])
}

pub fn provenance_from_metadata(meta: &HashMap<String, String>) -> Provenance {
    let get = |k: &str| meta.get(k).cloned().unwrap_or_default();
    Provenance {
        source: get(META_SOURCE),
        training_data: get(META_TRAINING_DATA),
        steps: get(META_STEPS).parse().unwrap_or(0),
    }
}

/// The config stored in a file's metadata, if any.
pub fn config_from_metadata(meta: &HashMap<String, String>, path: &Path) -> Result<Option<Config>> {
    match meta.get(META_CONFIG) {
        None => Ok(None),
        Some(s) => {
            let c: Config = serde_json::from_str(s)
                .map_err(|e| Error::format(path, format!("bad {META_CONFIG} metadata: {e}")))?;
            c.validate()
                .map_err(|e| Error::format(path, e.to_string()))?;
            Ok(Some(c))
        }
    }
}

/// Infer the config from tensor shapes (for state dicts without our metadata, e.g. the
/// authors' checkpoints): width from `encoder.conv3.weight`, blocks by counting.
pub fn infer_config(tensors: &TensorMap, path: &Path) -> Result<Config> {
    let conv3 = tensors.get("encoder.conv3.weight").ok_or_else(|| {
        Error::weights(
            path,
            "cannot infer the model config: no encoder.conv3.weight",
        )
    })?;
    // [width, width / 2, 3, 3]; anything else is not the stem conv (width is checked below).
    let width = match conv3.size()[..] {
        [w, _, _, _] => w,
        ref other => {
            return Err(Error::weights(
                path,
                format!(
                    "cannot infer the model config: encoder.conv3.weight has shape {other:?}, \
                     expected [width, width / 2, 3, 3]"
                ),
            ))
        }
    };
    let mut blocks = [0i64; 3];
    for (i, b) in blocks.iter_mut().enumerate() {
        while tensors.contains_key(&format!("encoder.layer{}.{}.conv1.weight", i + 1, *b)) {
            *b += 1;
        }
    }
    let cfg = Config::new(width, blocks);
    cfg.validate()
        .map_err(|e| Error::weights(path, e.to_string()))?;
    Ok(cfg)
}

/// A tensor error of a model whose config was inferred, with that config (a tensor of an
/// odd shape makes a model nothing like the file's: the error should say so).
pub fn with_inferred_config(e: Error, config: &Config) -> Error {
    match e {
        Error::Weights { path, msg } => Error::weights(
            path,
            format!(
                "{msg} (for the model inferred from its tensors: width {}, blocks {:?})",
                config.width, config.blocks
            ),
        ),
        e => e,
    }
}

/// Which tensors a load may leave at their initial values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Every model tensor must be in the file.
    Error,
    /// The file may hold the encoder only (training a fresh decoder on imported CLIP weights).
    DecoderMayBeMissing,
}

/// Copy `tensors` into the variables of `vs`, checking every name, shape and dtype.
/// Tensors named `encoder.layer4.*` are ignored (the model never builds layer4); any other
/// unexpected tensor is an error, and so is a missing one (unless `missing` allows it).
pub fn load_into(
    vs: &nn::VarStore,
    tensors: &TensorMap,
    path: &Path,
    missing: Missing,
) -> Result<()> {
    let vars = vs.variables();
    let specs: Vec<TensorSpec> = vars
        .iter()
        .map(|(name, v)| TensorSpec {
            name: name.clone(),
            shape: v.size(),
            kind: v.kind(),
        })
        .collect();
    check_tensors(&specs, tensors, path, missing)?;
    for (name, var) in &vars {
        if let Some(t) = tensors.get(name) {
            tch::no_grad(|| var.shallow_clone().f_copy_(t))?;
        }
    }
    Ok(())
}

/// Check `tensors` against the variables a model needs (`specs`), without touching a model:
/// every name, shape and dtype, as [`load_into`] describes.
pub fn check_tensors(
    specs: &[TensorSpec],
    tensors: &TensorMap,
    path: &Path,
    missing: Missing,
) -> Result<()> {
    let mut specs: Vec<&TensorSpec> = specs.iter().collect();
    specs.sort_by(|a, b| a.name.cmp(&b.name));
    for spec in &specs {
        let name = &spec.name;
        match tensors.get(name) {
            None if missing == Missing::DecoderMayBeMissing && !name.starts_with("encoder.") => {}
            None if !name.starts_with("encoder.") && !tensors.keys().any(|k| !k.starts_with("encoder.")) => {
                return Err(Error::weights(
                    path,
                    "holds only an encoder (e.g. imported CLIP weights); inference needs a decoder too: \
                     `clipdenoise import checkpoint CKPT --encoder FILE`, or train one",
                ))
            }
            None => return Err(Error::weights(path, format!("missing tensor {name}"))),
            Some(t) => {
                if t.size() != spec.shape {
                    return Err(Error::weights(
                        path,
                        format!("tensor {name} has shape {:?}, the model needs {:?}", t.size(), spec.shape),
                    ));
                }
                if t.kind() != spec.kind {
                    return Err(Error::weights(
                        path,
                        format!("tensor {name} has dtype {:?}, the model needs {:?}", t.kind(), spec.kind),
                    ));
                }
            }
        }
    }
    if let Some(extra) = tensors.keys().find(|k| {
        !k.starts_with("encoder.layer4.")
            && specs
                .binary_search_by(|s| s.name.as_str().cmp(k.as_str()))
                .is_err()
    }) {
        return Err(Error::weights(path, format!("unexpected tensor {extra}")));
    }
    Ok(())
}

/// Build the model of `config` on `device` and load `tensors` into it. The tensors are
/// checked against the model's variables first, before anything is allocated: a config
/// (from metadata, or inferred from one tensor's shape) never makes a model bigger than the
/// tensors that fill it, so a small hostile file cannot ask for gigabytes. The allocation
/// is then tried once with a fallible constructor, so a device without room for the model
/// gives an error, not a panic.
pub fn build_checked(
    tensors: &TensorMap,
    config: &Config,
    path: &Path,
    device: Device,
    missing: Missing,
) -> Result<(nn::VarStore, ClipDenoise)> {
    config
        .validate()
        .map_err(|e| Error::weights(path, e.to_string()))?;
    let specs = model_tensor_specs(config);
    check_tensors(&specs, tensors, path, missing)?;
    let bytes: i64 = specs
        .iter()
        .map(|s| s.shape.iter().product::<i64>() * s.kind.elt_size_in_bytes() as i64)
        .sum();
    let probe = Tensor::f_empty([bytes], (Kind::Uint8, device)).map_err(|e| {
        Error::weights(
            path,
            format!(
                "no room for the model ({} MB) on {device:?}: {}",
                bytes >> 20,
                Error::from(e)
            ),
        )
    })?;
    drop(probe);
    let vs = nn::VarStore::new(device);
    let model = ClipDenoise::new(&vs.root(), config);
    load_into(&vs, tensors, path, missing)?;
    Ok((vs, model))
}

/// A model loaded from a weights file, with its var store (the f32 masters).
pub struct LoadedModel {
    pub vs: nn::VarStore,
    pub model: ClipDenoise,
    pub provenance: Provenance,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("config", &self.model.config)
            .finish()
    }
}

/// Build the model described by `tensors` (config from metadata, else inferred) on `device`.
pub fn build_model(
    tensors: &TensorMap,
    meta: &HashMap<String, String>,
    path: &Path,
    device: Device,
    missing: Missing,
) -> Result<LoadedModel> {
    let config = match config_from_metadata(meta, path)? {
        Some(c) => {
            // The usual way a file and its metadata disagree, said plainly.
            if let Some(w) = tensors
                .get("encoder.conv3.weight")
                .and_then(|t| t.size().first().copied())
                .filter(|&w| w != c.width)
            {
                return Err(Error::weights(
                    path,
                    format!(
                        "the config in its metadata says width {}, its tensors are width {w} \
                         (encoder.conv3.weight)",
                        c.width
                    ),
                ));
            }
            c
        }
        None => {
            let config = infer_config(tensors, path)?;
            let (vs, model) = build_checked(tensors, &config, path, device, missing)
                .map_err(|e| with_inferred_config(e, &config))?;
            return Ok(LoadedModel {
                vs,
                model,
                provenance: provenance_from_metadata(meta),
            });
        }
    };
    let (vs, model) = build_checked(tensors, &config, path, device, missing)?;
    Ok(LoadedModel {
        vs,
        model,
        provenance: provenance_from_metadata(meta),
    })
}

/// Load a complete model from a safetensors weights file.
pub fn load_model(path: &Path, device: Device) -> Result<LoadedModel> {
    let (tensors, meta) = read_safetensors(path)?;
    build_model(&tensors, &meta, path, device, Missing::Error)
}

/// Save a model (its var store) with config and provenance.
pub fn save_model(
    path: &Path,
    vs: &nn::VarStore,
    config: &Config,
    prov: &Provenance,
) -> Result<()> {
    let tensors: TensorMap = vs.variables().into_iter().collect();
    write_safetensors(path, &tensors, model_metadata(config, prov))
}

/// Copy a model file with its config changed by `change` (tensors and the other metadata kept
/// byte for byte); the new config is validated against the tensors before anything is written.
pub fn reconfigure(
    input: &Path,
    output: &Path,
    change: impl FnOnce(&mut Config),
) -> Result<Config> {
    let (tensors, mut meta) = read_safetensors(input)?;
    let mut config = match config_from_metadata(&meta, input)? {
        Some(c) => c,
        None => infer_config(&tensors, input)?,
    };
    change(&mut config);
    config.validate()?;
    let specs = model_tensor_specs(&config);
    check_tensors(&specs, &tensors, input, Missing::Error)?;
    meta.insert(
        META_CONFIG.to_string(),
        serde_json::to_string(&config).expect("config serialises"),
    );
    write_safetensors(output, &tensors, meta)?;
    Ok(config)
}

/// Name of the shipped default model (trained by this project; see weights/README.md).
pub const DEFAULT_MODEL_NAME: &str = "clipdenoise-tiny";

/// The shipped default model, embedded in every binary and in the plugin so it is found
/// wherever they are installed.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../weights/clipdenoise-tiny.safetensors");

/// Load the embedded default model.
pub fn load_default(device: Device) -> Result<LoadedModel> {
    let path = Path::new(DEFAULT_MODEL_NAME);
    let (tensors, meta) = parse_safetensors(DEFAULT_MODEL, path)?;
    build_model(&tensors, &meta, path, device, Missing::Error)
}

/// A model given by the user: a weights file, or the embedded default.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ModelSource {
    #[default]
    Default,
    File(PathBuf),
}

impl ModelSource {
    /// `""` or `"default"` mean the embedded default model; anything else is a path.
    pub fn parse(s: &str) -> ModelSource {
        match s.trim() {
            "" | "default" => ModelSource::Default,
            p => ModelSource::File(PathBuf::from(p)),
        }
    }

    pub fn load(&self, device: Device) -> Result<LoadedModel> {
        match self {
            ModelSource::Default => load_default(device),
            ModelSource::File(p) => load_model(p, device),
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Default => write!(f, "{DEFAULT_MODEL_NAME} (built in)"),
            ModelSource::File(p) => write!(f, "{}", p.display()),
        }
    }
}
