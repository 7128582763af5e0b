//! `clipdenoise bench`: synthetic u8 frames through the real worker stage ([`crate::engine`],
//! the same code path as the GStreamer element), reporting throughput, latency, the
//! upload/model/download split and peak memory.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use tch::Device;

use crate::auto_precision::PrecisionChoice;
use crate::engine::{self, EngineConfig, Output};
use crate::error::{Error, Result};
use crate::frame::{FrameFormat, PixelFormat};
use crate::inference::{Options, Precision};
use crate::weights::ModelSource;

#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub model: ModelSource,
    pub opts: Options,
    pub width: usize,
    pub height: usize,
    pub batch_size: usize,
    /// Frames measured (rounded up to whole batches).
    pub frames: usize,
    /// Batches run before measuring.
    pub warmup_batches: usize,
    pub format: PixelFormat,
}

/// What a bench run measured. Every field is always present in the JSON (null when unknown).
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub preset: String,
    pub device: String,
    /// What the model ran in (`auto` resolved).
    pub precision: String,
    /// `auto` when precision=auto chose it, `set` otherwise.
    pub precision_source: String,
    /// precision=auto on the CPU: its timings on this size (best of its runs, ms per frame),
    /// the implied PSNR loss of bf16 against fp32 (dB) and why it chose.
    pub auto_fp32_ms: Option<f64>,
    pub auto_bf16_ms: Option<f64>,
    pub auto_bf16_loss_db: Option<f64>,
    pub auto_reason: Option<String>,
    /// Activations and weights in channels_last (NHWC strides) rather than contiguous NCHW.
    pub channels_last: bool,
    pub size: String,
    pub format: String,
    pub batch_size: usize,
    pub frames: usize,
    pub threads: i32,
    pub seconds: f64,
    pub fps: f64,
    /// Send-to-output time per frame with the producer saturating the queue (so it includes
    /// the wait behind the queued frames: throughput mode, not a live source's latency).
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub upload_ms_per_frame: f64,
    pub model_ms_per_frame: f64,
    pub download_ms_per_frame: f64,
    /// CPU time (user + system, all threads of the process) per measured frame: the work a
    /// frame costs, steadier than the frame rate on a machine that others load too.
    pub cpu_ms_per_frame: f64,
    pub peak_rss_mb: f64,
    pub peak_gpu_mb: Option<f64>,
}

/// Peak resident set size of this process so far (VmHWM), in MiB.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|kb| kb.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// GPU memory in use on `index` per nvidia-smi (MiB), if it can tell.
fn gpu_used_mb(index: usize) -> Option<f64> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=memory.used",
            "--format=csv,noheader,nounits",
            &format!("--id={index}"),
        ])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Deterministic pseudo-random frames (a few distinct ones, cycled).
fn synthetic_frames(fmt: &FrameFormat, count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|k| {
            let mut s = 0x9E37_79B9u32.wrapping_mul(k as u32 + 1);
            (0..fmt.frame_len())
                .map(|_| {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    (s >> 24) as u8
                })
                .collect()
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

pub fn run(cfg: &BenchConfig) -> Result<BenchReport> {
    if cfg.batch_size == 0 || cfg.frames == 0 || cfg.width == 0 || cfg.height == 0 {
        return Err(Error::Input(
            "bench needs a size, a batch size and frames above 0".into(),
        ));
    }
    let fmt = FrameFormat::new(cfg.format, cfg.width, cfg.height);
    let batches = cfg.frames.div_ceil(cfg.batch_size);
    let measured = batches * cfg.batch_size;
    let warmup = cfg.warmup_batches * cfg.batch_size;
    let engine_cfg = EngineConfig {
        batch_size: cfg.batch_size,
        // Batches are always full: the producer never waits.
        max_latency: Duration::from_secs(3600),
        queue_size: 2 * cfg.batch_size,
        ..EngineConfig::default()
    };
    let (tx, rx) = engine::spawn::<usize>(cfg.model.clone(), cfg.opts.clone(), engine_cfg)?;
    let info = tx.control().info().clone();
    if cfg.opts.precision == Precision::Auto {
        // Choose before the measured frames (the worker runs it ahead of them).
        tx.warm_up(fmt)
            .map_err(|_| Error::Input("the model worker stopped".into()))?;
    }
    let frames = synthetic_frames(&fmt, 4.min(cfg.batch_size.max(2)));
    let total = warmup + measured;
    let producer = {
        let tx = tx.clone();
        let frames = frames.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                if tx.send(frames[i % frames.len()].clone(), fmt, i).is_err() {
                    break;
                }
            }
        })
    };
    drop(tx);
    let gpu = match info.device {
        Device::Cuda(i) => Some(i),
        _ => None,
    };
    let m = receive(&rx, cfg.batch_size, warmup, total, gpu)?;
    let (latencies, seconds, peak_gpu) = (m.latencies, m.seconds, m.peak_gpu);
    let (upload, model, download) = (m.upload, m.model, m.download);
    let _ = producer.join();
    let choice = rx.control().stats().precision_choice;
    let choice = choice.unwrap_or_else(|| PrecisionChoice::set(info.precision));
    let n = measured as f64;
    Ok(BenchReport {
        model: info.model.clone(),
        preset: info.config.name(),
        device: format!("{:?}", info.device).to_lowercase(),
        precision: choice.precision.to_string(),
        precision_source: choice.source().into(),
        auto_fp32_ms: choice.fp32_ms,
        auto_bf16_ms: choice.bf16_ms,
        auto_bf16_loss_db: choice.bf16_loss_db,
        auto_reason: choice.chosen.then(|| choice.reason.clone()),
        channels_last: cfg.opts.channels_last,
        size: format!("{}x{}", cfg.width, cfg.height),
        format: format!("{:?}", cfg.format).to_lowercase(),
        batch_size: cfg.batch_size,
        frames: measured,
        threads: tch::get_num_threads(),
        seconds,
        fps: n / seconds.max(1e-9),
        latency_p50_ms: percentile(&latencies, 0.5),
        latency_p99_ms: percentile(&latencies, 0.99),
        upload_ms_per_frame: upload / n,
        model_ms_per_frame: model / n,
        download_ms_per_frame: download / n,
        cpu_ms_per_frame: m.cpu_seconds * 1e3 / n,
        peak_rss_mb: peak_rss_mb(),
        peak_gpu_mb: peak_gpu,
    })
}

/// What the receiving side measured after the warm-up frames: per-frame latencies (sorted),
/// stage times summed over frames (ms), the wall time, the peak GPU memory.
struct Measured {
    latencies: Vec<f64>,
    upload: f64,
    model: f64,
    download: f64,
    seconds: f64,
    /// Process CPU time over the same span as `seconds`.
    cpu_seconds: f64,
    peak_gpu: Option<f64>,
}

/// CPU time this process has used so far (user + system, all threads), in seconds.
fn process_cpu_seconds() -> f64 {
    // /proc/self/stat: fields 14 and 15 (utime, stime) in clock ticks, after the `(comm)`.
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = s.rsplit_once(')')?.1.to_string();
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            (f.len() == 2).then(|| f[0] + f[1])
        })
        .unwrap_or(0);
    ticks as f64 / 100.0
}

/// Take `total` frames from the engine; the clock starts after the first `warmup`.
fn receive(
    rx: &engine::EngineReceiver<usize>,
    batch_size: usize,
    warmup: usize,
    total: usize,
    gpu: Option<usize>,
) -> Result<Measured> {
    let mut m = Measured {
        latencies: Vec::with_capacity(total - warmup),
        upload: 0.0,
        model: 0.0,
        download: 0.0,
        seconds: 0.0,
        cpu_seconds: 0.0,
        peak_gpu: gpu.and_then(gpu_used_mb),
    };
    let mut t0 = Instant::now();
    let mut cpu0 = process_cpu_seconds();
    let mut received = 0;
    while received < total {
        match rx.recv() {
            Ok(Output::Frame(f)) => {
                received += 1;
                if received == warmup {
                    t0 = Instant::now();
                    cpu0 = process_cpu_seconds();
                } else if received > warmup {
                    m.latencies
                        .push(f.timing.submitted.elapsed().as_secs_f64() * 1e3);
                    let per = f.timing.batch_frames.max(1) as f64;
                    m.upload += f.timing.stages.upload.as_secs_f64() * 1e3 / per;
                    m.model += f.timing.stages.model.as_secs_f64() * 1e3 / per;
                    m.download += f.timing.stages.download.as_secs_f64() * 1e3 / per;
                    if received % batch_size == 0 {
                        if let (Some(i), Some(p)) = (gpu, m.peak_gpu) {
                            m.peak_gpu = gpu_used_mb(i).map(|u| u.max(p));
                        }
                    }
                }
            }
            Ok(Output::Marker(_)) => {}
            Ok(Output::Failed { error, .. }) => return Err(error),
            Err(e) => {
                return Err(Error::Input(format!(
                    "bench: the engine stopped early ({e})"
                )))
            }
        }
    }
    m.seconds = t0.elapsed().as_secs_f64();
    m.cpu_seconds = process_cpu_seconds() - cpu0;
    m.latencies.sort_by(f64::total_cmp);
    Ok(m)
}

/// Where `--preset` writes its freshly initialised weights (speed does not depend on values).
pub fn preset_weights_path(preset: &str) -> PathBuf {
    std::env::temp_dir().join(format!("clipdenoise-bench-{preset}-init.safetensors"))
}

/// Write a freshly initialised model of `preset` (seeded) for speed measurements.
pub fn write_preset_weights(preset: &str) -> Result<PathBuf> {
    let config = crate::model::Config::preset(preset)?;
    tch::manual_seed(0);
    let vs = tch::nn::VarStore::new(Device::Cpu);
    let _model = crate::model::ClipDenoise::new(&vs.root(), &config);
    let path = preset_weights_path(preset);
    let prov = crate::weights::Provenance {
        source: "untrained initialisation (speed benchmarks only)".into(),
        training_data: "none".into(),
        steps: 0,
    };
    crate::weights::save_model(&path, &vs, &config, &prov)?;
    Ok(path)
}
