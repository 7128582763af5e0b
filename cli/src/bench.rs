//! `clipdenoise bench`: prints the core's bench report as text or JSON.

use std::path::PathBuf;

use anyhow::Context;
use clipdenoise::frame::PixelFormat;
use clipdenoise::inference::{DeviceRequest, Options, Precision};
use clipdenoise::research::bench::{self, BenchConfig};
use clipdenoise::weights::ModelSource;

use crate::models::RefineArgs;

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  clipdenoise bench --size 640x360 --batch-size 4 --frames 40\n  \
    clipdenoise bench --preset clip-rn50 --size 1920x1080 --batch-size 8 --precision bf16 --device cuda --json\n\n\
    Frames go through the same worker stage as the GStreamer element. --preset runs a freshly\n\
    initialised model of that shape (speed does not depend on the weights) and prints its file."
)]
pub struct Args {
    /// Weights file, or "default" for the built-in model
    #[arg(long, default_value = "default", conflicts_with = "preset")]
    model: String,
    /// Benchmark a freshly initialised model of this preset (clip-rn50, small, tiny, nano)
    #[arg(long)]
    preset: Option<String>,
    /// Frame size WIDTHxHEIGHT
    #[arg(long, default_value = "640x360", value_parser = parse_size)]
    size: (usize, usize),
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    batch_size: u32,
    /// auto (the faster of fp32 and bf16 on this size, timed first; bf16 on CUDA), fp32,
    /// fp16 (CUDA) or bf16
    #[arg(long, default_value = "auto")]
    precision: Precision,
    /// auto, cpu, cuda or cuda:N
    #[arg(long, default_value = "auto")]
    device: String,
    /// Frames to measure (after one warm-up batch)
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    frames: u32,
    /// Warm-up batches before measuring
    #[arg(long, default_value_t = 1)]
    warmup: u32,
    /// Pixel format of the synthetic frames: rgb, rgbx, i420, nv12
    #[arg(long, default_value = "rgb")]
    format: String,
    /// Keep activations and weights in contiguous NCHW instead of channels_last (to measure
    /// that lever)
    #[arg(long)]
    contiguous: bool,
    /// Measure the coarse-grain mode (two passes: pixel-shuffled sub-images, then the frame)
    #[arg(long)]
    coarse_grain: bool,
    #[command(flatten)]
    refine: RefineArgs,
    /// Print one JSON object
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<(usize, usize), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or("expected WIDTHxHEIGHT, e.g. 640x360")?;
    let p = |v: &str| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or(format!("bad size '{s}'"))
    };
    Ok((p(w)?, p(h)?))
}

fn parse_format(s: &str) -> anyhow::Result<PixelFormat> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "rgb" => PixelFormat::Rgb,
        "rgbx" => PixelFormat::Rgbx,
        "bgrx" => PixelFormat::Bgrx,
        "i420" => PixelFormat::I420,
        "nv12" => PixelFormat::Nv12,
        _ => anyhow::bail!("unknown format '{s}' (expected rgb, rgbx, bgrx, i420 or nv12)"),
    })
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let device = a.device.parse::<DeviceRequest>()?.resolve()?;
    let precision = a.precision;
    let model = match &a.preset {
        Some(p) => {
            let path: PathBuf =
                bench::write_preset_weights(p).context("cannot write preset weights")?;
            ModelSource::File(path)
        }
        None => ModelSource::parse(&a.model),
    };
    let cfg = BenchConfig {
        model,
        opts: Options {
            device,
            precision,
            channels_last: !a.contiguous,
            coarse_grain: a.coarse_grain,
            refine: a.refine.refine,
            ..Options::default()
        },
        width: a.size.0,
        height: a.size.1,
        batch_size: a.batch_size as usize,
        frames: a.frames as usize,
        warmup_batches: a.warmup as usize,
        format: parse_format(&a.format)?,
    };
    let r = bench::run(&cfg)?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        println!(
            "{} ({}) on {} {}{}, {} batch {}: {:.2} frames/s, latency p50 {:.1} ms p99 {:.1} ms",
            r.model,
            r.preset,
            r.device,
            r.precision,
            if r.channels_last { "" } else { " NCHW" },
            r.size,
            r.batch_size,
            r.fps,
            r.latency_p50_ms,
            r.latency_p99_ms
        );
        println!(
            "per frame: upload {:.2} ms, model {:.2} ms, download {:.2} ms; peak RSS {:.0} MiB{}",
            r.upload_ms_per_frame,
            r.model_ms_per_frame,
            r.download_ms_per_frame,
            r.peak_rss_mb,
            r.peak_gpu_mb
                .map(|g| format!(", peak GPU {g:.0} MiB"))
                .unwrap_or_default()
        );
        if let (Some(f), Some(b)) = (r.auto_fp32_ms, r.auto_bf16_ms) {
            println!(
                "precision auto chose {}: fp32 {:.1} ms, bf16 {:.1} ms per frame, bf16 loss {:.4} dB; {}",
                r.precision,
                f,
                b,
                r.auto_bf16_loss_db.unwrap_or(f64::NAN),
                r.auto_reason.as_deref().unwrap_or("")
            );
        }
    }
    Ok(())
}
