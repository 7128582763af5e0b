//! What `video` and `image` share: the model/device/precision options, resolving `--model`
//! (the built-in default, a file, or a name found in the model directories), and reading a
//! weights file's header for `info`; what `video` and `plan` share: the element's options for
//! a stream of frames ([`StreamArgs`]); the refinement after the network ([`RefineArgs`]).

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context};
use clipdenoise::inference::{DeviceRequest, Precision};
use clipdenoise::refine::Refine;
use clipdenoise::weights::{self, ModelSource, Provenance};
use clipdenoise::Config;

#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// Weights file (.safetensors), a model name found by `clipdenoise info`, or `default`
    /// (the model built into the binary)
    #[arg(
        long,
        short,
        value_name = "MODEL",
        default_value = "default",
        help_heading = "Model"
    )]
    pub model: String,
    /// Where the model runs: auto (CUDA when present, else CPU), cpu, cuda, cuda:N
    #[arg(long, short, default_value = "auto", help_heading = "Model")]
    pub device: String,
    /// Arithmetic: auto (on the CPU the faster of fp32 and bf16 on the frame size, timed at
    /// load; bf16 only within 0.05 dB of fp32; bf16 on CUDA), fp32, bf16, or fp16 (CUDA only)
    #[arg(long, default_value = "auto", help_heading = "Model")]
    pub precision: Precision,
    /// Blend between the input (0) and the denoised output (1)
    #[arg(long, short, default_value_t = 1.0, value_parser = parse_strength, help_heading = "Model")]
    pub strength: f64,
    /// Also remove coarse grain (low light, phones): a first pass on the frame's four
    /// pixel-shuffled half-size sub-images, then the usual one. Twice the compute; on
    /// fine-grained noise it loses detail (weights/README.md)
    #[arg(long, help_heading = "Model")]
    pub coarse_grain: bool,
}

/// `--refine`: what runs after the network (`image`, `video`, `eval`, `bench`).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RefineArgs {
    /// After the network: `off`, or `wiener`, an empirical Wiener filter of the input with the
    /// network's output as pilot (BM3D's second stage; it keeps the input's brightness and
    /// colour and can only shrink its detail; weights/README.md). Its parameters:
    /// `wiener:block=8,stride=2,colour=opponent,sigma=psd,scale=1,levels=1,dc=wiener`, and
    /// `adapt=LO:HI` (levels of 255): each image gets the stage in proportion to its estimated
    /// noise, none at or below LO, all of it at or above HI. `adaptive` is
    /// `wiener:sigma=flat,scale=2,dc=input,adapt=3:5` (weights/README.md, session 11).
    /// `collab`: the same filter on groups of similar blocks (BM3D's block matching, on the
    /// CPU), `collab:sigma=flat,scale=1,search=12,group=32,step=3,dc=wiener` and `adapt`;
    /// `strong` is `collab:scale=3,search=16,adapt=3:5` (weights/README.md, session 12)
    #[arg(
        long,
        value_name = "off|wiener[:KEY=VALUE,...]|adaptive|collab[:KEY=VALUE,...]|strong",
        default_value = "off",
        help_heading = "Model"
    )]
    pub refine: Refine,
}

/// A file is not live: every frame also looks two frames ahead (weights/README.md).
pub const DEFAULT_LOOKAHEAD: u32 = 2;

/// The element's options for a stream of frames, as `video` and `plan` take them.
#[derive(clap::Args, Debug, Clone)]
pub struct StreamArgs {
    /// Frames per model call (default: the element's)
    #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = "Model")]
    pub batch_size: Option<u32>,
    /// Frames with more pixels than this run as overlapping tiles (default: the element's)
    #[arg(long, value_name = "PIXELS", help_heading = "Model")]
    pub max_pixels: Option<u64>,
    /// Temporal denoising, 0..1: each frame's input is averaged with the motion-aligned
    /// earlier (and with --lookahead later) frames where they match; 0 denoises every frame
    /// on its own
    #[arg(long, value_name = "AMOUNT", value_parser = parse_strength, help_heading = "Model")]
    pub temporal: Option<f64>,
    /// Later frames each frame's temporal denoising also uses (offline mode; 0: causal, as
    /// for a live source; a job's segments denoise this many frames past their end)
    #[arg(long, value_name = "FRAMES", default_value_t = DEFAULT_LOOKAHEAD,
          value_parser = clap::value_parser!(u32).range(0..=clipdenoise::temporal::MAX_LOOKAHEAD as i64), help_heading = "Model")]
    pub lookahead: u32,
    #[command(flatten)]
    pub refine: RefineArgs,
}

pub fn parse_strength(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("'{s}' is not a number"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{v} is outside 0..1"))
    }
}

impl ModelArgs {
    /// The device asked for, checked: an unknown name or a missing CUDA device is an error.
    pub fn device(&self) -> anyhow::Result<(DeviceRequest, tch::Device)> {
        let req: DeviceRequest = self.device.parse()?;
        let dev = req.resolve()?;
        if self.precision == Precision::Fp16 && dev == tch::Device::Cpu {
            bail!("--precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU");
        }
        Ok((req, dev))
    }

    /// `--model` resolved to the built-in model or an existing file.
    pub fn source(&self) -> anyhow::Result<ModelSource> {
        resolve_model(&self.model)
    }
}

/// `default`/empty: the built-in model; an existing file; else a name (with or without
/// `.safetensors`) in the model directories ([`ModelSource::resolve`]).
pub fn resolve_model(s: &str) -> anyhow::Result<ModelSource> {
    Ok(ModelSource::resolve(s)?)
}

/// What a safetensors file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsKind {
    /// A complete denoiser (encoder and decoder).
    Denoiser,
    /// An encoder alone (e.g. imported CLIP weights, to train a decoder on).
    EncoderOnly,
    /// Not clipdenoise weights.
    Other,
}

/// A weights file described from its safetensors header alone (no tensor data is read).
#[derive(Debug)]
pub struct ModelSummary {
    /// The stored config, else the one inferred from tensor shapes; None when the file holds
    /// no complete model.
    pub config: Option<Config>,
    /// Whether the config came from the file's metadata (else inferred).
    pub config_stored: bool,
    pub provenance: Provenance,
    pub parameters: u64,
    pub tensors: usize,
    pub kind: WeightsKind,
}

/// Summarise a safetensors header (`bytes` holds at least the whole header).
pub fn summarise_header(bytes: &[u8], path: &Path) -> anyhow::Result<ModelSummary> {
    let header = parse_header(bytes)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let meta: HashMap<String, String> = header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                .collect()
        })
        .unwrap_or_default();
    let mut shapes: HashMap<&str, Vec<i64>> = HashMap::new();
    let mut parameters = 0u64;
    for (name, v) in header.iter().filter(|(k, _)| k.as_str() != "__metadata__") {
        let shape: Vec<i64> = v
            .get("shape")
            .and_then(|s| s.as_array())
            .map(|a| a.iter().filter_map(|d| d.as_i64()).collect())
            .unwrap_or_default();
        if !name.ends_with("num_batches_tracked") && !name.starts_with("encoder.layer4.") {
            parameters += shape.iter().product::<i64>().max(0) as u64;
        }
        shapes.insert(name.as_str(), shape);
    }
    let kind = match (
        shapes.contains_key("encoder.conv1.weight"),
        shapes.contains_key("last.weight"),
    ) {
        (true, true) => WeightsKind::Denoiser,
        (true, false) => WeightsKind::EncoderOnly,
        _ => WeightsKind::Other,
    };
    let stored = weights::config_from_metadata(&meta, path).ok().flatten();
    let config_stored = stored.is_some();
    let config = stored.or_else(|| {
        let width = *shapes.get("encoder.conv3.weight")?.first()?;
        let mut blocks = [0i64; 3];
        for (i, b) in blocks.iter_mut().enumerate() {
            while shapes
                .contains_key(format!("encoder.layer{}.{}.conv1.weight", i + 1, *b).as_str())
            {
                *b += 1;
            }
        }
        let c = Config::new(width, blocks);
        c.validate().ok().map(|_| c)
    });
    Ok(ModelSummary {
        config,
        config_stored,
        provenance: weights::provenance_from_metadata(&meta),
        parameters,
        tensors: shapes.len(),
        kind,
    })
}

fn parse_header(bytes: &[u8]) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
    if bytes.len() < 8 {
        bail!("only {} bytes", bytes.len());
    }
    let n = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    if n > bytes.len() - 8 {
        bail!("header of {n} bytes in a file of {}", bytes.len());
    }
    let v: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).context("bad header")?;
    match v {
        serde_json::Value::Object(m) => Ok(m),
        _ => bail!("header is not a JSON object"),
    }
}

/// Read only the header of a safetensors file and summarise it.
pub fn summarise_file(path: &Path) -> anyhow::Result<ModelSummary> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .with_context(|| format!("{}: not a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n > 100 << 20 {
        bail!(
            "{}: not a safetensors file (header of {n} bytes)",
            path.display()
        );
    }
    let mut bytes = len.to_vec();
    bytes.resize(8 + n as usize, 0);
    f.read_exact(&mut bytes[8..])
        .with_context(|| format!("{}: truncated header", path.display()))?;
    summarise_header(&bytes, path)
}
