//! `precision = auto` on the CPU: time fp32 and bf16 on the frame size the model is about to
//! run, keep the faster, and take bf16 only when it also passes the quality check the project
//! uses for bf16 (benchmarks/README.md: at most 0.05 dB below fp32).
//!
//! Both runs denoise the same deterministic textured and noisy synthetic frame. The quality
//! check: with `E` the fp32 output's squared error against the frame's clean texture and `D`
//! the bf16 output's squared difference from the fp32 output, bf16's errors add to fp32's, and
//! the implied loss is `10 log10(1 + D / E)` dB.
//!
//! One choice per model load, on the first frame size: a later frame of another size keeps it
//! (the element renegotiating caps, the CLI's next image). Choosing again would keep a second
//! copy of the model in the other precision and pause the stream for six more runs at the new
//! size (a warm-up and two timed runs of each), for what has been the same answer: which precision wins depends on the CPU's matrix
//! units, not on the size (bf16 / fp32 on the default model: AMX Xeon 1.91x at 640x360 and
//! 2.07x at 1920x1080; a Xeon with AVX512-BF16 and no AMX 0.67x, 0.68x and 0.69x at 640x360,
//! 1280x720 and 1920x1080; benchmarks/README.md). A new model load (a new stream, the CLI's
//! next run) chooses again.
//!
//! Test-only overrides (environment): `CLIPDENOISE_AUTO_PRECISION_FORCE=fp32|bf16` makes that
//! one the faster whatever the timings say, `CLIPDENOISE_AUTO_PRECISION_MAX_LOSS_DB=x` replaces
//! the 0.05 dB threshold. The quality check always runs.

use std::time::Instant;

use tch::{Device, Kind, Tensor};

use crate::error::Result;
use crate::inference::{Denoiser, Precision};

/// Most PSNR bf16 may lose against fp32 to be chosen, in dB.
pub const MAX_LOSS_DB: f64 = 0.05;
/// Timed runs per precision, after one untimed warm-up run each.
pub const TIMED_RUNS: usize = 2;
/// The environment variable that forces which precision counts as faster (tests).
pub const FORCE_ENV: &str = "CLIPDENOISE_AUTO_PRECISION_FORCE";
/// The environment variable that replaces [`MAX_LOSS_DB`] (tests).
pub const MAX_LOSS_ENV: &str = "CLIPDENOISE_AUTO_PRECISION_MAX_LOSS_DB";

/// How the precision a model runs in came about.
#[derive(Debug, Clone, PartialEq)]
pub struct PrecisionChoice {
    /// What the model runs in now.
    pub precision: Precision,
    /// True when `auto` chose it, false when it was set (or auto has not run yet).
    pub chosen: bool,
    /// The frame size auto timed on (width, height).
    pub size: Option<(i64, i64)>,
    /// Best of the timed runs, in ms per frame.
    pub fp32_ms: Option<f64>,
    pub bf16_ms: Option<f64>,
    /// The implied PSNR loss of bf16 against fp32 on the synthetic frame, in dB.
    pub bf16_loss_db: Option<f64>,
    /// Why, in words (for logs and `bench`).
    pub reason: String,
}

impl PrecisionChoice {
    /// A precision the user set.
    pub fn set(precision: Precision) -> Self {
        PrecisionChoice {
            precision,
            chosen: false,
            size: None,
            fp32_ms: None,
            bf16_ms: None,
            bf16_loss_db: None,
            reason: "set".into(),
        }
    }

    /// `chosen` or `set`, as `stats` and `bench` say it.
    pub fn source(&self) -> &'static str {
        if self.chosen {
            "auto"
        } else {
            "set"
        }
    }
}

impl std::fmt::Display for PrecisionChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.precision, self.source())?;
        let ms = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1} ms"));
        if self.chosen {
            if let Some((w, h)) = self.size {
                write!(f, " at {w}x{h}")?;
            }
            write!(f, ": fp32 {}, bf16 {}", ms(self.fp32_ms), ms(self.bf16_ms))?;
            if let Some(l) = self.bf16_loss_db {
                write!(f, ", bf16 loss {l:.4} dB")?;
            }
            write!(f, "; {}", self.reason)?;
        }
        Ok(())
    }
}

/// The precision `auto` runs in on `device` without timing: on CUDA bf16 (fp16 where the GPU
/// has no bf16: pre-Ampere), None on the CPU (timed per frame size).
pub fn untimed(device: Device) -> Option<Precision> {
    match device {
        Device::Cuda(_) => Some(Precision::Bf16),
        _ => None,
    }
}

/// What `auto` does on `device`, in one line (`clipdenoise info`): what it would pick needs a
/// frame size, so on the CPU this says how it decides and which matrix units the CPU reports.
pub fn describe(device: Device) -> String {
    if let Some(p) = untimed(device) {
        return format!("precision auto (the default): {p} on {device:?}");
    }
    let flags = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("flags"))
                .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        })
        .unwrap_or_default();
    let has = |f: &str| {
        if flags.iter().any(|x| x == f) {
            "yes"
        } else {
            "no"
        }
    };
    format!(
        "precision auto (the default): on the CPU, fp32 or bf16, whichever is faster on the \
         frame size, timed when the model loads for it (bf16 only within {MAX_LOSS_DB} dB of \
         fp32); this CPU reports avx512_bf16: {}, amx_bf16: {}",
        has("avx512_bf16"),
        has("amx_bf16")
    )
}

/// A deterministic (1, 3, h, w) frame in [0, 1]: smooth gradients plus stripes and checks of
/// several frequencies (texture), and its noisy copy (xorshift, about sigma 25 / 255).
pub fn synthetic_pair(height: i64, width: i64) -> Result<(Tensor, Tensor)> {
    let (h, w) = (height as usize, width as usize);
    let mut clean = Vec::with_capacity(3 * h * w);
    let mut noisy = Vec::with_capacity(3 * h * w);
    let mut s = 0x9E37_79B9u32;
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let (fx, fy) = (x as f32, y as f32);
                let v = 0.5
                    + 0.2 * ((fx * 0.05 + c as f32).sin() * (fy * 0.03).cos())
                    + 0.15
                        * if ((x / 8) + (y / 8)) % 2 == 0 {
                            1.0
                        } else {
                            -1.0
                        }
                    + 0.1 * (fx * 0.7 + fy * 0.2).sin();
                let v = v.clamp(0.0, 1.0);
                // Sum of four uniforms: roughly Gaussian, sigma about 25 / 255.
                let mut u = 0.0f32;
                for _ in 0..4 {
                    s ^= s << 13;
                    s ^= s >> 17;
                    s ^= s << 5;
                    u += (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                }
                clean.push(v);
                noisy.push(v + u * 0.17);
            }
        }
    }
    let t = |v: Vec<f32>| Tensor::from_slice(&v).view([1, 3, height, width]);
    Ok((t(clean), t(noisy)))
}

fn mse(a: &Tensor, b: &Tensor) -> Result<f64> {
    let d = a.f_to_kind(Kind::Double)? - b.f_to_kind(Kind::Double)?;
    Ok(d.f_square()?.f_mean(Kind::Double)?.double_value(&[]))
}

/// Best of [`TIMED_RUNS`] runs of `model` on `x` after one warm-up run, in ms, and the output.
fn time(model: &Denoiser, x: &Tensor) -> Result<(f64, Tensor)> {
    let out = model.denoise(x)?.f_to_device(Device::Cpu)?;
    let mut best = f64::INFINITY;
    for _ in 0..TIMED_RUNS {
        let t = Instant::now();
        let _ = model.denoise(x)?.f_to_device(Device::Cpu)?;
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((best, out))
}

/// Time `fp32` and `bf16` (the same model prepared in each) on a `width` x `height` frame and
/// choose.
pub fn choose(
    fp32: &Denoiser,
    bf16: &Denoiser,
    width: i64,
    height: i64,
) -> Result<PrecisionChoice> {
    let (clean, noisy) = synthetic_pair(height, width)?;
    let noisy = noisy.f_to_device(fp32.device())?;
    let (fp32_ms, out32) = time(fp32, &noisy)?;
    let (bf16_ms, out16) = time(bf16, &noisy)?;
    let e = mse(&out32, &clean)?.max(1e-12);
    let d = mse(&out16, &out32)?;
    let loss = 10.0 * (1.0 + d / e).log10();
    let max_loss = std::env::var(MAX_LOSS_ENV)
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(MAX_LOSS_DB);
    let forced = std::env::var(FORCE_ENV)
        .ok()
        .and_then(|v| v.parse::<Precision>().ok());
    let bf16_faster = match forced {
        Some(p) => p == Precision::Bf16,
        None => bf16_ms < fp32_ms,
    };
    let (precision, reason) = match (bf16_faster, loss <= max_loss) {
        (false, _) => (Precision::Fp32, "fp32 is faster".to_string()),
        (true, true) => (Precision::Bf16, "bf16 is faster".to_string()),
        (true, false) => (
            Precision::Fp32,
            format!("bf16 is faster but loses {loss:.4} dB (> {max_loss} dB)"),
        ),
    };
    let reason = match forced {
        Some(p) => format!("{reason} ({FORCE_ENV}={p})"),
        None => reason,
    };
    Ok(PrecisionChoice {
        precision,
        chosen: true,
        size: Some((width, height)),
        fp32_ms: Some(fp32_ms),
        bf16_ms: Some(bf16_ms),
        bf16_loss_db: Some(loss),
        reason,
    })
}
