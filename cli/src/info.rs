//! `clipdenoise info`: versions, devices, and the models this binary can use.

use std::path::{Path, PathBuf};

use clipdenoise::weights::resolve::{self, ENV_MODEL_DIR};
use clipdenoise::weights::{DEFAULT_MODEL, DEFAULT_MODEL_NAME};

use crate::models::{self, ModelSummary, WeightsKind};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  clipdenoise info\n  CLIPDENOISE_MODEL_DIR=~/models clipdenoise info\n\n\
    Models are the built-in default plus every *.safetensors file in $CLIPDENOISE_MODEL_DIR and in \
    the cache directory ($CLIPDENOISE_CACHE_DIR, else ~/.cache/clipdenoise); pass one to \
    `video`/`image` with --model PATH or --model NAME (its file name without .safetensors)."
)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    println!("clipdenoise {}", env!("CARGO_PKG_VERSION"));
    let (version, dir) = libtorch();
    match dir {
        Some(d) => println!("libtorch: {version} ({})", d.display()),
        None => println!("libtorch: {version}"),
    }
    println!("CPU threads: {}", tch::get_num_threads());
    if tch::Cuda::is_available() {
        let n = tch::Cuda::device_count();
        let names: Vec<String> = (0..n).map(|i| format!("cuda:{i}")).collect();
        println!(
            "CUDA: {n} device(s): {} (cuDNN {})",
            names.join(", "),
            if tch::Cuda::cudnn_is_available() {
                "available"
            } else {
                "not available"
            }
        );
    } else {
        println!("CUDA: not available (the model runs on the CPU)");
    }
    let device = clipdenoise::inference::DeviceRequest::Auto
        .resolve()
        .unwrap_or(tch::Device::Cpu);
    println!("{}", clipdenoise::auto_precision::describe(device));
    #[cfg(feature = "gst")]
    for line in crate::video::gstreamer_report() {
        println!("{line}");
    }
    #[cfg(not(feature = "gst"))]
    println!("GStreamer: not built in (built without the `gst` feature; `video` is unavailable)");

    println!("Models:");
    let builtin = models::summarise_header(DEFAULT_MODEL, Path::new(DEFAULT_MODEL_NAME))?;
    print_model(
        &format!(
            "default: {DEFAULT_MODEL_NAME} (built in, {} KB)",
            DEFAULT_MODEL.len() / 1024
        ),
        &builtin,
    );
    let files = resolve::find_model_files();
    for f in &files {
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        let name = f
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let title = format!("{name}: {} ({} KB)", f.display(), size / 1024);
        match models::summarise_file(f) {
            Ok(s) => print_model(&title, &s),
            Err(e) => println!("  {title}\n      unreadable: {e:#}"),
        }
    }
    paper_model(&files);
    let dirs = resolve::model_dirs();
    let env = std::env::var_os(ENV_MODEL_DIR)
        .map(|_| "")
        .unwrap_or(" (unset)");
    println!(
        "Model directories: {} [${ENV_MODEL_DIR}{env}, then the cache directory]",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}

/// Whether the paper's model is here: a denoiser with the clip-rn50 config (made from the
/// authors' checkpoint) and OpenAI's encoder (fetched), each with how to get it when missing.
fn paper_model(files: &[PathBuf]) {
    use crate::weights::{AUTHORS_CHECKPOINTS, ENCODER_FILE};
    println!("The paper's model (clip-rn50):");
    let is_paper = |f: &PathBuf| {
        models::summarise_file(f).is_ok_and(|s| {
            matches!(s.kind, WeightsKind::Denoiser)
                && s.config.is_some_and(|c| c.name() == "clip-rn50")
        })
    };
    let encoder = clipdenoise::weights::fetch::cache_dir(None)
        .map(|d| d.join(ENCODER_FILE))
        .ok();
    match encoder.as_ref().filter(|p| p.is_file()) {
        Some(p) => println!("  OpenAI CLIP RN50 encoder: present ({})", p.display()),
        None => {
            println!("  OpenAI CLIP RN50 encoder: missing (clipdenoise weights fetch clip-rn50)")
        }
    }
    match files.iter().find(|f| is_paper(f)) {
        Some(f) => println!(
            "  denoiser: present ({}; --model {})",
            f.display(),
            f.display()
        ),
        None => println!(
            "  denoiser: missing (the authors' trained checkpoint, {AUTHORS_CHECKPOINTS}, then: \
             clipdenoise import checkpoint net_g_latest.pth --encoder {} -o {})",
            encoder
                .as_ref()
                .map_or(ENCODER_FILE.into(), |p| p.display().to_string()),
            encoder
                .as_ref()
                .map_or("clipdenoise-rn50.safetensors".into(), |p| p
                    .with_file_name("clipdenoise-rn50.safetensors")
                    .display()
                    .to_string())
        ),
    }
}

fn print_model(title: &str, s: &ModelSummary) {
    println!("  {title}");
    let cfg = match &s.config {
        Some(c) => format!(
            "{} (width {}, blocks {:?}, aug_level {}){}",
            c.name(),
            c.width,
            c.blocks,
            c.aug_level,
            if s.config_stored {
                ""
            } else {
                ", inferred from tensor shapes"
            }
        ),
        None => "unknown".into(),
    };
    let kind = match s.kind {
        WeightsKind::Denoiser => "denoiser",
        WeightsKind::EncoderOnly => "encoder weights only (for training; not a denoiser)",
        WeightsKind::Other => {
            println!("      not clipdenoise weights ({} tensors)", s.tensors);
            return;
        }
    };
    println!(
        "      {kind}; config {cfg}; {} parameters in {} tensors",
        s.parameters, s.tensors
    );
    let p = &s.provenance;
    if p.source.is_empty() && p.training_data.is_empty() && p.steps == 0 {
        println!("      provenance: not recorded in the file");
    } else {
        let or_none = |v: &str| {
            if v.is_empty() {
                "not recorded".to_string()
            } else {
                v.to_string()
            }
        };
        println!("      source: {}", or_none(&p.source));
        println!(
            "      training data: {}; steps: {}",
            or_none(&p.training_data),
            p.steps
        );
    }
}

/// The libtorch this process runs with: the version from the `torch/version.py` next to the
/// loaded `libtorch_cpu.so` (a PyTorch wheel) or libtorch's `build-version` file, and its folder.
fn libtorch() -> (String, Option<PathBuf>) {
    let lib = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .filter_map(|l| l.split_whitespace().nth(5))
                .find(|p| p.ends_with("/libtorch_cpu.so"))
                .map(PathBuf::from)
        });
    let Some(dir) = lib.as_deref().and_then(Path::parent).map(Path::to_path_buf) else {
        return (
            "unknown (libtorch_cpu.so not found among the loaded libraries)".into(),
            None,
        );
    };
    let root = dir.parent().unwrap_or(&dir);
    // `name = 'value'` or `name: Optional[str] = 'value'` in version.py.
    let py = std::fs::read_to_string(root.join("version.py")).unwrap_or_default();
    let field = |name: &str| {
        py.lines()
            .filter(|l| l.starts_with(name) && l[name.len()..].trim_start().starts_with(['=', ':']))
            .find_map(|l| l.split(['\'', '"']).nth(1).map(str::to_string))
    };
    let version = match (field("__version__"), field("cuda")) {
        (Some(v), Some(c)) => format!("{v} (built for CUDA {c})"),
        (Some(v), None) => v,
        _ => std::fs::read_to_string(root.join("build-version"))
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into()),
    };
    (version, Some(dir))
}
