//! Whole-frame inference: any frame size in, same size out. Reflect padding to multiples of 32
//! (as the reference does), batches, device and precision, and overlapping tiles blended with
//! linear ramps for frames above a pixel budget.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use crate::auto_precision::{self, PrecisionChoice};
use crate::error::{Error, Result};
use crate::frame::{frames_to_tensor, tensor_to_frames, FrameFormat};
use crate::lowpass::keep_input_lowpass;
use crate::model::{ClipDenoise, Config};
use crate::pad::pad_to_multiple;
use crate::pixel_shuffle;
use crate::refine::Refine;
use crate::temporal::TemporalFilter;
use crate::weights::{self, LoadedModel, Provenance};

/// Arithmetic the model runs in. fp16/bf16 weights are copies of the f32 masters. `Auto` is a
/// request, resolved where the model is loaded ([`crate::auto_precision`]): on CUDA bf16, on
/// the CPU the faster of fp32 and bf16 on the frame size (fp32 until a size is known).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Precision {
    #[default]
    Fp32,
    Fp16,
    Bf16,
    Auto,
}

impl Precision {
    pub fn kind(self) -> Kind {
        match self {
            Precision::Fp32 => Kind::Float,
            Precision::Fp16 => Kind::Half,
            Precision::Bf16 => Kind::BFloat16,
            Precision::Auto => Kind::Float,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Fp32 => "fp32",
            Precision::Fp16 => "fp16",
            Precision::Bf16 => "bf16",
            Precision::Auto => "auto",
        }
    }
}

impl FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "fp32" | "f32" | "float32" => Ok(Precision::Fp32),
            "fp16" | "f16" | "float16" | "half" => Ok(Precision::Fp16),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            "auto" => Ok(Precision::Auto),
            _ => Err(Error::Input(format!(
                "unknown precision '{s}' (expected auto, fp32, fp16 or bf16)"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the user asked for: `auto` (CUDA if present, else CPU), `cpu`, `cuda`, `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
}

impl FromStr for DeviceRequest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let l = s.trim().to_ascii_lowercase();
        match l.as_str() {
            "auto" => Ok(DeviceRequest::Auto),
            "cpu" => Ok(DeviceRequest::Cpu),
            "cuda" | "gpu" => Ok(DeviceRequest::Cuda(0)),
            _ => l
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceRequest::Cuda)
                .ok_or_else(|| Error::UnknownDevice(s.to_string())),
        }
    }
}

impl std::fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceRequest::Auto => f.write_str("auto"),
            DeviceRequest::Cpu => f.write_str("cpu"),
            DeviceRequest::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl DeviceRequest {
    /// The device to run on. `Auto` falls back to the CPU; an explicit CUDA device that does
    /// not exist is an error.
    pub fn resolve(self) -> Result<Device> {
        let n = if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        };
        match self {
            DeviceRequest::Cpu => Ok(Device::Cpu),
            DeviceRequest::Auto => Ok(if n > 0 { Device::Cuda(0) } else { Device::Cpu }),
            DeviceRequest::Cuda(i) if i < n => Ok(Device::Cuda(i)),
            DeviceRequest::Cuda(i) => Err(Error::DeviceUnavailable(
                format!("cuda:{i}"),
                if n == 0 {
                    "CUDA is not available".into()
                } else {
                    format!("only {n} CUDA device(s)")
                },
            )),
        }
    }
}

/// Inference settings.
#[derive(Debug, Clone)]
pub struct Options {
    pub device: Device,
    pub precision: Precision,
    /// Frames with more pixels than this run as overlapping tiles (0: never tile;
    /// [`Options::AUTO_PIXELS`]: [`auto_max_pixels`], resolved where the model is loaded).
    pub max_pixels: i64,
    /// Overlap between neighbouring tiles, in pixels (rounded up to a multiple of 32).
    pub tile_overlap: i64,
    pub channels_last: bool,
    /// libtorch's intra-op (OpenMP) threads for the thread that builds the [`Denoiser`] (for
    /// threads libgomp did not start, the setting is theirs alone); 0 keeps libtorch's default.
    pub cpu_threads: usize,
    /// Coarse-grain mode: first denoise the frame's four pixel-shuffled half-size sub-images
    /// ([`crate::pixel_shuffle`]), then the reassembled result as usual. Removes much more of
    /// coarse, spatially correlated grain (low light, phones); twice the compute, and it loses
    /// detail on fine-grained noise (weights/README.md).
    pub coarse_grain: bool,
    /// What runs after the network on the whole frame ([`crate::refine`]): `Off`, or the
    /// empirical Wiener filter of the input with the network's output as pilot.
    pub refine: Refine,
}

impl Options {
    /// `max_pixels`: a budget chosen from the model and the device ([`auto_max_pixels`]).
    pub const AUTO_PIXELS: i64 = -1;
}

/// Activation memory per pixel of a batch, per unit of model width: measured with `clipdenoise
/// bench` on the CPU (peak RSS at 960x540 and 1920x1080: 558 bytes per pixel for width 16,
/// about 1,100 for width 32, 2,200 for clip-rn50's width 64), rounded up.
const ACTIVATION_BYTES_PER_PIXEL_PER_WIDTH: i64 = 36;
/// What a batch's activations may take by default: on the CPU, so that a 4K frame stays
/// near 2 GB in all (issue 14: 1080p took 4.1 GB unbounded); on a GPU, more.
const CPU_ACTIVATION_BUDGET: i64 = 1_250_000_000;
const CUDA_ACTIVATION_BUDGET: i64 = 8_000_000_000;

/// The default pixel budget (`max_pixels`) for `config` on `device` at batches of `batch`
/// frames: the largest tile whose batch keeps the activations within the device's budget.
/// For the default model on the CPU: 2.17 Mpixels (1080p runs whole, 4K as 6 tiles).
pub fn auto_max_pixels(config: &Config, device: Device, batch: usize) -> i64 {
    let budget = if device.is_cuda() {
        CUDA_ACTIVATION_BUDGET
    } else {
        CPU_ACTIVATION_BUDGET
    };
    let per_pixel = ACTIVATION_BYTES_PER_PIXEL_PER_WIDTH * config.width.max(1);
    (budget / per_pixel / batch.max(1) as i64).max(64 * 64)
}

impl Default for Options {
    fn default() -> Self {
        Options {
            device: Device::Cpu,
            precision: Precision::Fp32,
            max_pixels: 0,
            tile_overlap: 192,
            channels_last: true,
            cpu_threads: 0,
            coarse_grain: false,
            refine: Refine::Off,
        }
    }
}

/// Where the time of one [`Denoiser::denoise_frames_timed`] call went.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageTimes {
    /// Host to device copy and colour conversion to RGB.
    pub upload: Duration,
    /// The network, padding, tiling and the strength blend.
    pub model: Duration,
    /// Conversion back to the pixel format and device to host copy.
    pub download: Duration,
}

impl StageTimes {
    pub fn total(&self) -> Duration {
        self.upload + self.model + self.download
    }
}

/// One stream's part of a [`Denoiser::denoise_groups`] call.
pub struct FrameGroup<'a> {
    /// Packed frames, in display order.
    pub frames: &'a [&'a [u8]],
    /// Blend between input (0) and denoised output (1).
    pub strength: f64,
    /// The stream's temporal filter and its amount, if smoothing.
    pub temporal: Option<(&'a mut TemporalFilter, f64)>,
}

/// A model ready for inference: BN folded, weights in the chosen precision on the chosen device.
pub struct Denoiser {
    model: ClipDenoise,
    _vs: tch::nn::VarStore,
    opts: Options,
    provenance: Provenance,
    interrupt: Option<Interrupt>,
    /// How `opts.precision` came about (set, or chosen by `auto`).
    choice: PrecisionChoice,
    /// `auto` on the CPU before a frame size was timed: the same model prepared in bf16
    /// (`self` runs fp32 meanwhile).
    bf16_candidate: Option<Box<Denoiser>>,
}

/// Asked between the steps of a call (before and after the network, between tiles): true
/// stops the call with [`Error::Interrupted`]. A whole frame in the network is one step, so a
/// pixel budget (`max_pixels`) also bounds how long an interrupt may wait.
pub type Interrupt = Arc<dyn Fn() -> bool + Send + Sync>;

impl std::fmt::Debug for Denoiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Denoiser")
            .field("config", &self.model.config)
            .field("opts", &self.opts)
            .finish()
    }
}

impl Denoiser {
    /// `opts.precision` `Auto` resolves here on CUDA; on the CPU it runs fp32 (no second copy
    /// to time bf16 against: see [`Denoiser::new_auto`]).
    pub fn new(loaded: LoadedModel, opts: Options) -> Result<Self> {
        let mut opts = opts;
        let mut choice = PrecisionChoice::set(opts.precision);
        if opts.precision == Precision::Auto {
            let p = auto_precision::untimed(opts.device).unwrap_or(Precision::Fp32);
            opts.precision = p;
            choice = PrecisionChoice {
                precision: p,
                chosen: true,
                reason: match opts.device.is_cuda() {
                    true => "bf16 on CUDA".into(),
                    false => "fp32 (no bf16 copy to time)".into(),
                },
                ..PrecisionChoice::set(p)
            };
        }
        if opts.precision == Precision::Fp16 && opts.device == Device::Cpu {
            return Err(Error::Input(
                "fp16 needs a CUDA device; use fp32 or bf16 on the CPU".into(),
            ));
        }
        let LoadedModel {
            mut vs,
            mut model,
            provenance,
        } = loaded;
        // A model trained for the two-pass pipeline always runs it.
        let opts = Options {
            coarse_grain: opts.coarse_grain || model.config.coarse_grain,
            ..opts
        };
        vs.set_device(opts.device);
        if opts.cpu_threads > 0 {
            tch::set_num_threads(opts.cpu_threads as i32);
        }
        if opts.device.is_cuda() {
            // Video frames repeat one shape: let cuDNN time its algorithms once per shape.
            tch::Cuda::cudnn_set_benchmark(true);
        }
        model.prepare_inference(opts.precision.kind(), opts.channels_last);
        Ok(Denoiser {
            model,
            _vs: vs,
            opts,
            provenance,
            interrupt: None,
            choice,
            bf16_candidate: None,
        })
    }

    /// Switch the convolutions between the fused oneDNN path (the default where it runs: see
    /// [`ClipDenoise::prepare_inference`]) and the separate conv, activation and add passes.
    pub fn set_fused(&mut self, fused: bool) {
        let _guard = tch::no_grad_guard();
        self.model.prepare_inference_with(
            self.opts.precision.kind(),
            self.opts.channels_last,
            fused,
        );
        if let Some(bf16) = self.bf16_candidate.as_mut() {
            bf16.set_fused(fused);
        }
    }

    /// Whether the convolutions run fused (CPU, fp32 or bf16, libtorch with oneDNN).
    pub fn is_fused(&self) -> bool {
        self.model.is_fused()
    }

    /// `precision` `Auto`: `loaded` and `again` are two loads of the same model. On the CPU the
    /// first runs fp32 and the second is kept in bf16 until [`Denoiser::resolve_auto`] times
    /// them on a frame size; on CUDA `again` is dropped. Other precisions: [`Denoiser::new`].
    pub fn new_auto(loaded: LoadedModel, again: LoadedModel, opts: Options) -> Result<Self> {
        if opts.precision != Precision::Auto || auto_precision::untimed(opts.device).is_some() {
            return Denoiser::new(loaded, opts);
        }
        let mut fp32 = Denoiser::new(
            loaded,
            Options {
                precision: Precision::Fp32,
                ..opts.clone()
            },
        )?;
        let bf16 = Denoiser::new(
            again,
            Options {
                precision: Precision::Bf16,
                ..opts
            },
        )?;
        fp32.choice = PrecisionChoice {
            chosen: true,
            reason: "fp32 until a frame size is timed".into(),
            ..PrecisionChoice::set(Precision::Fp32)
        };
        fp32.bf16_candidate = Some(Box::new(bf16));
        Ok(fp32)
    }

    /// `auto` on the CPU, the first time a frame size is known: time fp32 and bf16 on a
    /// `width` x `height` frame and keep the faster that passes the quality check
    /// ([`crate::auto_precision::choose`]). Returns the choice when one was made now; None
    /// when there was nothing to choose (a set precision, or already chosen).
    pub fn resolve_auto(&mut self, width: i64, height: i64) -> Result<Option<PrecisionChoice>> {
        let Some(bf16) = self.bf16_candidate.take() else {
            return Ok(None);
        };
        let choice = match auto_precision::choose(self, &bf16, width, height) {
            Ok(c) => c,
            Err(e) => {
                self.choice.reason = format!("fp32: timing bf16 failed: {e}");
                return Err(e);
            }
        };
        if choice.precision == Precision::Bf16 {
            let interrupt = self.interrupt.take();
            *self = *bf16;
            self.interrupt = interrupt;
        }
        self.choice = choice.clone();
        Ok(Some(choice))
    }

    /// How the precision came about: set, or chosen by `auto` (and on what).
    pub fn precision_choice(&self) -> &PrecisionChoice {
        &self.choice
    }

    /// Check `interrupt` between the steps of every later call.
    pub fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }

    /// [`Error::Interrupted`] if the interrupt says so.
    fn check_interrupt(&self) -> Result<()> {
        match &self.interrupt {
            Some(stop) if stop() => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }

    /// Load a weights file and prepare it for inference.
    pub fn load(path: &Path, opts: Options) -> Result<Self> {
        let loaded = weights::load_model(path, opts.device)?;
        if opts.precision == Precision::Auto && auto_precision::untimed(opts.device).is_none() {
            let again = weights::load_model(path, opts.device)?;
            return Denoiser::new_auto(loaded, again, opts);
        }
        Denoiser::new(loaded, opts)
    }

    pub fn config(&self) -> &Config {
        &self.model.config
    }
    pub fn options(&self) -> &Options {
        &self.opts
    }
    pub fn device(&self) -> Device {
        self.opts.device
    }
    pub fn provenance(&self) -> &Provenance {
        &self.provenance
    }

    /// Run the network on (N, 3, H, W) with H, W multiples of 32. Returns f32, not clamped.
    pub fn forward_padded(&self, x: &Tensor) -> Result<Tensor> {
        let _guard = tch::no_grad_guard();
        self.check_interrupt()?;
        let x = x
            .f_to_device(self.opts.device)?
            .f_to_kind(self.opts.precision.kind())?;
        let x = crate::model::to_layout(&x, self.opts.channels_last);
        let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            self.model.forward_t(&x, false)
        }))
        .map_err(|p| Error::Torch(panic_message(&p)))?;
        self.check_interrupt()?;
        Ok(out.f_to_kind(Kind::Float)?)
    }

    /// Denoise an RGB batch (N, 3, H, W) f32 in [0, 1] (noisy values may be outside) of any size:
    /// pad, tile if above the pixel budget, crop back, clamp to [0, 1]; if the model's config
    /// says so, its low-pass replaced by the input's ([`Config::keep_input_lowpass`]) on the
    /// whole frame; then the refinement ([`Options::refine`]) with that output as its pilot.
    /// Output on the model's device.
    pub fn denoise(&self, x: &Tensor) -> Result<Tensor> {
        let size = x.size();
        if size.len() != 4 || size[1] != 3 || size[2] < 1 || size[3] < 1 {
            return Err(Error::Input(format!(
                "expected an (N, 3, H, W) batch, got {size:?}"
            )));
        }
        let out = if self.opts.coarse_grain {
            pixel_shuffle::two_passes(x, |t, _| self.denoise_once(t))?
        } else {
            self.denoise_once(x)?
        };
        let out = match self.model.config.keep_input_lowpass {
            Some(sigma) => keep_input_lowpass(&out, x, sigma)?.f_clamp(0.0, 1.0)?,
            None => out,
        };
        if self.opts.refine.is_off() {
            return Ok(out);
        }
        self.check_interrupt()?;
        Ok(self.opts.refine.apply(x, &out)?.f_clamp_(0.0, 1.0)?)
    }

    /// One pass of the network over a batch of any size (tiled above the pixel budget),
    /// clamped to [0, 1].
    fn denoise_once(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = (x.size()[2], x.size()[3]);
        let mut out = if self.opts.max_pixels > 0 && h * w > self.opts.max_pixels {
            self.denoise_tiled(x)?
        } else {
            self.forward_any(x)?
        };
        // In place: `out` is this call's own result, and a large image gets no second copy.
        Ok(out.f_clamp_(0.0, 1.0)?)
    }

    fn forward_any(&self, x: &Tensor) -> Result<Tensor> {
        let (h, w) = (x.size()[2], x.size()[3]);
        let padded = pad_to_multiple(&x.f_to_device(self.opts.device)?, Config::MULTIPLE)?;
        Ok(self
            .forward_padded(&padded)?
            .f_narrow(2, 0, h)?
            .f_narrow(3, 0, w)?)
    }

    /// Overlapping tiles of a size that fits the budget, blended with linear ramps over the overlap.
    fn denoise_tiled(&self, x: &Tensor) -> Result<Tensor> {
        let (n, h, w) = (x.size()[0], x.size()[2], x.size()[3]);
        let m = Config::MULTIPLE;
        let overlap = tile_overlap(self.opts.tile_overlap, self.config().head_radius());
        // Square-ish tile side fitting the budget, a multiple of 32, at least 2*overlap.
        let side = (((self.opts.max_pixels as f64).sqrt() as i64) / m * m)
            .max(2 * overlap)
            .max(m);
        let ys = tile_starts(h, side, overlap);
        let xs = tile_starts(w, side, overlap);
        let dev = self.opts.device;
        let x = x.f_to_device(dev)?;
        let mut acc = Tensor::f_zeros([n, 3, h, w], (Kind::Float, dev))?;
        let wsum = Tensor::f_zeros([1, 1, h, w], (Kind::Float, dev))?;
        for &y0 in &ys {
            let th = side.min(h - y0);
            for &x0 in &xs {
                let tw = side.min(w - x0);
                let tile = x.f_narrow(2, y0, th)?.f_narrow(3, x0, tw)?;
                let out = self.forward_any(&tile)?;
                let wy = ramp(th, overlap, y0 > 0, y0 + th < h, dev)?.f_view([1, 1, th, 1])?;
                let wx = ramp(tw, overlap, x0 > 0, x0 + tw < w, dev)?.f_view([1, 1, 1, tw])?;
                let wt = wy * wx;
                let _ = acc
                    .f_narrow(2, y0, th)?
                    .f_narrow(3, x0, tw)?
                    .f_add_(&(out * &wt))?;
                let _ = wsum.f_narrow(2, y0, th)?.f_narrow(3, x0, tw)?.f_add_(&wt)?;
            }
        }
        // In place, and the weights freed before the caller's next step.
        let _ = acc.f_div_(&wsum)?;
        drop(wsum);
        Ok(acc)
    }

    /// Denoise packed u8 frames of one format; `strength` blends input (0) and output (1).
    pub fn denoise_frames(
        &self,
        frames: &[&[u8]],
        fmt: &FrameFormat,
        strength: f64,
    ) -> Result<Vec<Vec<u8>>> {
        Ok(self.denoise_frames_timed(frames, fmt, strength)?.0)
    }

    /// [`Denoiser::denoise_frames`], also returning the time spent uploading and converting,
    /// in the model, and converting back and downloading. On CUDA the device is synchronised
    /// at each boundary so the split is real.
    pub fn denoise_frames_timed(
        &self,
        frames: &[&[u8]],
        fmt: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.denoise_frames_smoothed(frames, fmt, strength, None)
    }

    /// [`Denoiser::denoise_frames_timed`] on consecutive frames of one video, then smoothed
    /// over time by `temporal` at the given amount (see [`crate::temporal`]).
    pub fn denoise_frames_smoothed(
        &self,
        frames: &[&[u8]],
        fmt: &FrameFormat,
        strength: f64,
        temporal: Option<(&mut TemporalFilter, f64)>,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        let mut groups = [FrameGroup {
            frames,
            strength,
            temporal,
        }];
        let (mut out, times) = self.denoise_groups(fmt, &mut groups)?;
        Ok((out.pop().unwrap_or_default(), times))
    }

    /// Several streams' frames of one format in one network call: each group keeps its own
    /// strength and temporal filter, and gets its own frames back, in the groups' order.
    /// A group at strength 0 is its input, exactly (no round trip through floats: 1 LSB off
    /// in YUV), and does not enter the network.
    pub fn denoise_groups(
        &self,
        fmt: &FrameFormat,
        groups: &mut [FrameGroup<'_>],
    ) -> Result<(Vec<Vec<Vec<u8>>>, StageTimes)> {
        let t0 = Instant::now();
        let active: Vec<&[u8]> = groups
            .iter()
            .filter(|g| g.strength > 0.0)
            .flat_map(|g| g.frames.iter().copied())
            .collect();
        let x = match active.is_empty() {
            true => None,
            false => Some(match converted(groups, fmt, self.opts.device)? {
                Some(x) => x,
                None => frames_to_tensor(&active, fmt, self.opts.device)?,
            }),
        };
        self.synchronize();
        let t1 = Instant::now();
        // The network's input (fused over time where a group has a temporal filter).
        let xin = match &x {
            Some(x) => Some(prepared(x, fmt, groups)?),
            None => None,
        };
        let y = match &xin {
            Some(xin) => Some(self.denoise(xin)?),
            None => None,
        };
        let mut outs = Vec::with_capacity(groups.len());
        let (mut offset, mut convert) = (0, Duration::ZERO);
        for g in groups.iter_mut() {
            let (Some(x), Some(y), true) = (&x, &y, g.strength > 0.0) else {
                if let Some((filter, _)) = g.temporal.as_mut() {
                    filter.reset();
                }
                outs.push(g.frames.iter().map(|f| f.to_vec()).collect());
                continue;
            };
            let n = g.frames.len() as i64;
            let (x, y) = (x.f_narrow(0, offset, n)?, y.f_narrow(0, offset, n)?);
            // The output weighed against the fused input by the frames fused per pixel.
            let y = match (g.temporal.as_mut(), &xin) {
                (Some((filter, _)), Some(xin)) => {
                    filter.finish(&xin.f_narrow(0, offset, n)?, &y)?
                }
                _ => y,
            };
            offset += n;
            let y = if g.strength >= 1.0 {
                y
            } else {
                &x + (y - &x) * g.strength
            };
            self.synchronize();
            let t = Instant::now();
            outs.push(tensor_to_frames(&y, fmt, g.frames)?);
            convert += t.elapsed();
        }
        let total = t1.elapsed();
        let times = StageTimes {
            upload: t1 - t0,
            model: total.saturating_sub(convert),
            download: convert,
        };
        Ok((outs, times))
    }

    /// Wait for the model's CUDA device (a no-op on the CPU).
    fn synchronize(&self) {
        if let Device::Cuda(i) = self.opts.device {
            tch::Cuda::synchronize(i as i64);
        }
    }
}

/// The active frames of `groups` as the one active group's temporal filter converted them
/// already (offline mode: [`TemporalFilter::converted`]), or None.
fn converted(
    groups: &[FrameGroup<'_>],
    fmt: &FrameFormat,
    device: Device,
) -> Result<Option<Tensor>> {
    let mut active = groups.iter().filter(|g| g.strength > 0.0);
    match (active.next(), active.next()) {
        (Some(g), None) => match &g.temporal {
            Some((filter, _)) => filter.converted(g.frames, fmt, device),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// The network's input: each active group's frames through its temporal filter's input
/// stage ([`TemporalFilter::prepare_window`], with the frames that follow them in offline
/// mode), the others as they are.
fn prepared(x: &Tensor, fmt: &FrameFormat, groups: &mut [FrameGroup<'_>]) -> Result<Tensor> {
    if groups.iter().all(|g| g.temporal.is_none()) {
        return Ok(x.shallow_clone());
    }
    let mut parts = Vec::with_capacity(groups.len());
    let mut offset = 0;
    for g in groups.iter_mut().filter(|g| g.strength > 0.0) {
        let n = g.frames.len() as i64;
        let part = x.f_narrow(0, offset, n)?;
        offset += n;
        parts.push(match g.temporal.as_mut() {
            Some((filter, amount)) => {
                let future = filter.take_future_frames(fmt, x.device())?;
                filter.prepare_frames(&part, &future, *amount)?
            }
            None => part,
        });
    }
    crate::temporal::cat(&parts)
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    let s = p
        .downcast_ref::<String>()
        .map(|s| s.as_str())
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("model panicked");
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(s)
        .trim()
        .to_string()
}

/// The tiles' overlap: the one asked for, but at least four times the output head's reach
/// (the blend drops the first quarter of the overlap at inner edges, so no pixel that counts
/// took a reflected tile border into the kernel head's average), rounded up to a multiple of 32.
fn tile_overlap(asked: i64, head_radius: i64) -> i64 {
    let m = Config::MULTIPLE;
    let want = asked.max(4 * head_radius);
    ((want + m - 1) / m * m).max(m)
}

/// Tile origins covering `len` with tiles of `side` overlapping by at least `overlap`.
fn tile_starts(len: i64, side: i64, overlap: i64) -> Vec<i64> {
    if len <= side {
        return vec![0];
    }
    let step = side - overlap;
    let count = (len - overlap + step - 1) / step;
    // Spread the tiles evenly so the last one ends exactly at `len`.
    (0..count)
        .map(|i| (i * (len - side)) / (count - 1).max(1))
        .collect()
}

/// Blending weights along one axis. At inner edges the first quarter of the overlap is
/// discarded (weight 0: it saw the tile border, not the image), then the weight ramps linearly
/// to 1 over the next half; the neighbour's ramp mirrors it, so weights never all vanish.
fn ramp(len: i64, overlap: i64, ramp_start: bool, ramp_end: bool, dev: Device) -> Result<Tensor> {
    let mut v = vec![1f32; len as usize];
    let (skip, width) = (overlap as f32 / 4.0, overlap as f32 / 2.0);
    for i in 0..(overlap.min(len) as usize) {
        let r = ((i as f32 + 0.5 - skip) / width).clamp(0.0, 1.0);
        if ramp_start {
            v[i] = v[i].min(r);
        }
        if ramp_end {
            v[len as usize - 1 - i] = v[len as usize - 1 - i].min(r);
        }
    }
    Ok(Tensor::f_from_slice(&v)?.f_to_device(dev)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!(
            "auto".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Auto
        );
        assert_eq!(
            "CUDA:1".parse::<DeviceRequest>().unwrap(),
            DeviceRequest::Cuda(1)
        );
        assert_eq!(
            "cpu".parse::<DeviceRequest>().unwrap().resolve().unwrap(),
            Device::Cpu
        );
        assert!("tpu"
            .parse::<DeviceRequest>()
            .unwrap_err()
            .to_string()
            .contains("'tpu'"));
        assert!("fp8".parse::<Precision>().is_err());
    }

    #[test]
    fn the_tile_overlap_covers_the_output_heads_reach() {
        // The default overlap (192) covers the [1, 2] and [1, 2, 4, 8] kernel heads.
        assert_eq!(tile_overlap(192, 1), 192);
        assert_eq!(tile_overlap(192, 15), 192);
        // A small overlap asked for grows to four times the reach, a multiple of 32.
        assert_eq!(tile_overlap(8, 3), 32);
        assert_eq!(tile_overlap(8, 15), 64);
        assert_eq!(tile_overlap(64, 64 * 8), 2048);
    }

    #[test]
    fn tiles_cover_with_overlap() {
        for (len, side, ov) in [
            (1024, 256, 64),
            (1000, 256, 96),
            (300, 256, 64),
            (256, 256, 64),
        ] {
            let s = tile_starts(len, side, ov);
            assert_eq!(s[0], 0);
            assert_eq!(*s.last().unwrap() + side.min(len), len);
            for p in s.windows(2) {
                assert!(p[0] + side - p[1] >= ov, "{len} {side} {ov}: {s:?}");
            }
        }
    }

    #[test]
    fn coarse_grain_mode_runs_the_network_on_the_sub_images_then_on_their_merge() {
        use crate::weights::ModelSource;
        let fixture = ModelSource::File(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tiny-w8/official_state_dict.safetensors"),
        );
        let load = |coarse_grain| {
            let opts = Options {
                coarse_grain,
                ..Options::default()
            };
            Denoiser::new(fixture.load(Device::Cpu).unwrap(), opts).unwrap()
        };
        let (plain, coarse) = (load(false), load(true));
        tch::manual_seed(3);
        let x = Tensor::rand([2, 3, 37, 50], (Kind::Float, Device::Cpu));
        let first = plain.denoise(&pixel_shuffle::split(&x).unwrap()).unwrap();
        let want = plain
            .denoise(&pixel_shuffle::merge(&first, 37, 50).unwrap())
            .unwrap();
        let got = coarse.denoise(&x).unwrap();
        assert_eq!(got.size(), [2, 3, 37, 50]);
        let diff = (&got - &want).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "not the two passes: {diff}");
        let from_plain = (&got - plain.denoise(&x).unwrap()).abs().mean(Kind::Float);
        assert!(
            from_plain.double_value(&[]) > 1e-3,
            "the same as one plain pass"
        );
    }
}
