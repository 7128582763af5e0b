//! The batching stage: the one place frames meet the model.
//!
//! [`spawn`] starts one worker thread that loads and owns the model (a `Tensor` is `Send` but
//! not `Sync`, so exactly one thread touches the model) and returns a channel pair, as rav1e's
//! `new_channel()` does. The model is a [`FrameModel`]: the [`Denoiser`] that [`spawn`] loads,
//! or any other one given to [`spawn_with`] (the tests run the engine on a fake model).
//!
//! - [`EngineSender`]: frames (packed u8, see [`crate::frame`]) and markers go in through a
//!   bounded channel of `queue_size` items. A full channel blocks the producer (backpressure,
//!   memory stays bounded). Dropping every sender ends the stream: pending frames run, then the
//!   worker exits and the receiver reports [`RecvError::Disconnected`].
//! - [`EngineReceiver`]: [`Output`]s come out in input order, each carrying the caller's opaque
//!   payload `T` (a GStreamer element passes the buffer's metadata through it) and the frame's
//!   [`FrameTiming`].
//! - [`EngineControl`] (from either end, `Clone + Send + Sync`): flushing, statistics, the
//!   live [`Strength`], and joining the worker.
//!
//! The worker assembles batches of up to `batch_size` frames of one [`FrameFormat`]. A partial
//! batch runs when its oldest frame has waited `max_latency`, when the format changes, on a
//! drain marker ([`EngineSender::drain`]), and when the senders are gone.
//!
//! Flushing works by epochs: [`EngineControl::flush_start`] bumps the epoch, wakes every
//! blocked call at once (a send blocked on a full channel, the worker, a waiting receiver) and
//! discards what is queued; anything from an older epoch that is still in flight (a batch the
//! model is running) is dropped when it surfaces. Until [`EngineControl::flush_stop`], sends
//! and receives return `Flushing` immediately.
//!
//! The parts: the channel ends ([`channel`]), the flushing epochs and the shared state
//! ([`control`]), the counters ([`stats`]) and the batching loop ([`worker`]).
//! crossbeam-channel stays private to this module.

mod channel;
mod control;
mod exit_guard;
mod host;
mod stats;
#[cfg(test)]
mod tests;
mod worker;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use tch::Device;

use crate::auto_precision::{self, PrecisionChoice};
use crate::error::{Error, Result};
use crate::frame::FrameFormat;
use crate::inference::{auto_max_pixels, Denoiser, Interrupt, Options, Precision, StageTimes};
use crate::model::Config;
use crate::temporal::TemporalFilter;
use crate::weights::{ModelSource, Provenance};

pub use channel::{EngineReceiver, EngineSender, WarmingUp};
pub use control::EngineControl;
pub use host::{HostKey, SharedModel, Sharing};
pub use stats::Stats;

/// A model the worker runs: batches of packed frames of one format in, cleaned frames of the
/// same format out. [`Denoiser`] is the real one.
pub trait FrameModel {
    /// Denoise `frames` (each packed in `format`'s layout), blended with the input by
    /// `strength` (0 = input, 1 = fully denoised), with the time each stage took.
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)>;
    /// [`FrameModel::denoise_batch`] on consecutive frames of one stream, smoothed over time
    /// by `temporal` at `amount` (0 = off). Models without a tensor path ignore it.
    fn denoise_sequence(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
        _temporal: &mut TemporalFilter,
        _amount: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.denoise_batch(frames, format, strength)
    }
    fn config(&self) -> &Config;
    fn provenance(&self) -> &Provenance;
    fn device(&self) -> Device;
    fn precision(&self) -> Precision;
    /// The pixel budget above which frames run as tiles (0: whole frames).
    fn max_pixels(&self) -> i64 {
        0
    }
    /// Check `interrupt` between the steps of a batch and stop with [`Error::Interrupted`]
    /// when it says so (the worker asks this when the batch is flushed or the process exits).
    /// Models without steps may ignore it.
    fn set_interrupt(&mut self, _interrupt: Interrupt) {}
    /// The model host this model runs on, when it is shared between streams ([`host`]).
    fn sharing(&self) -> Option<Sharing> {
        None
    }
    /// `precision` `auto`: choose on a `width` x `height` frame, once (the worker asks before
    /// the first run of each size). The choice when one was made now.
    fn resolve_precision(&mut self, _width: i64, _height: i64) -> Result<Option<PrecisionChoice>> {
        Ok(None)
    }
    /// How the precision the model runs in came about.
    fn precision_choice(&self) -> PrecisionChoice {
        PrecisionChoice::set(self.precision())
    }
}

impl FrameModel for Denoiser {
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.denoise_frames_timed(frames, format, strength)
    }
    fn denoise_sequence(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
        temporal: &mut TemporalFilter,
        amount: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.denoise_frames_smoothed(frames, format, strength, Some((temporal, amount)))
    }
    fn config(&self) -> &Config {
        Denoiser::config(self)
    }
    fn provenance(&self) -> &Provenance {
        Denoiser::provenance(self)
    }
    fn device(&self) -> Device {
        Denoiser::device(self)
    }
    fn precision(&self) -> Precision {
        self.options().precision
    }
    fn max_pixels(&self) -> i64 {
        self.options().max_pixels
    }
    fn set_interrupt(&mut self, interrupt: Interrupt) {
        Denoiser::set_interrupt(self, interrupt)
    }
    fn resolve_precision(&mut self, width: i64, height: i64) -> Result<Option<PrecisionChoice>> {
        self.resolve_auto(width, height)
    }
    fn precision_choice(&self) -> PrecisionChoice {
        Denoiser::precision_choice(self).clone()
    }
}

impl<M: FrameModel + ?Sized> FrameModel for Box<M> {
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        (**self).denoise_batch(frames, format, strength)
    }
    fn denoise_sequence(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
        temporal: &mut TemporalFilter,
        amount: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        (**self).denoise_sequence(frames, format, strength, temporal, amount)
    }
    fn config(&self) -> &Config {
        (**self).config()
    }
    fn provenance(&self) -> &Provenance {
        (**self).provenance()
    }
    fn device(&self) -> Device {
        (**self).device()
    }
    fn precision(&self) -> Precision {
        (**self).precision()
    }
    fn max_pixels(&self) -> i64 {
        (**self).max_pixels()
    }
    fn set_interrupt(&mut self, interrupt: Interrupt) {
        (**self).set_interrupt(interrupt)
    }
    fn sharing(&self) -> Option<Sharing> {
        (**self).sharing()
    }
    fn resolve_precision(&mut self, width: i64, height: i64) -> Result<Option<PrecisionChoice>> {
        (**self).resolve_precision(width, height)
    }
    fn precision_choice(&self) -> PrecisionChoice {
        (**self).precision_choice()
    }
}

/// The blend between input (0) and denoised output (1), shared with a running engine: set it
/// from any thread and the next batch uses the new value.
#[derive(Debug, Clone)]
pub struct Strength(Arc<AtomicU64>);

impl Strength {
    pub fn new(value: f64) -> Self {
        Strength(Arc::new(AtomicU64::new(Self::clamp(value).to_bits())))
    }
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
    /// Values are clamped to [0, 1]; NaN counts as 1.
    pub fn set(&self, value: f64) {
        self.0
            .store(Self::clamp(value).to_bits(), Ordering::Relaxed);
    }
    fn clamp(v: f64) -> f64 {
        if v.is_nan() {
            1.0
        } else {
            v.clamp(0.0, 1.0)
        }
    }
}

impl Default for Strength {
    fn default() -> Self {
        Strength::new(1.0)
    }
}

/// How the worker batches.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Most frames per model call (at least 1).
    pub batch_size: usize,
    /// How long the oldest frame of a partial batch may wait for more frames.
    pub max_latency: Duration,
    /// Capacity of the input channel, in frames and markers (at least 1). The output channel
    /// holds `max(queue_size, batch_size)` items.
    pub queue_size: usize,
    /// Blend between input and output, changeable while running.
    pub strength: Strength,
    /// Temporal smoothing of the output ([`crate::temporal`]; 0 = off), changeable while
    /// running.
    pub temporal: Strength,
    /// Offline mode: each frame waits for this many later frames, which its temporal
    /// filter also looks at (0: causal). At the end of the stream, a drain or a new format
    /// the frames held run with the later frames there are.
    pub lookahead: usize,
    /// The stream index of the first frame, for the temporal filter's restarts
    /// ([`crate::temporal::TemporalFilter::set_origin`]): 0 for a whole file, a segment of
    /// one denoised on its own its first frame's; None (live): no restarts.
    pub temporal_origin: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_size: 4,
            max_latency: Duration::from_millis(50),
            queue_size: 16,
            strength: Strength::default(),
            temporal: Strength::new(0.0),
            lookahead: 0,
            temporal_origin: None,
        }
    }
}

impl EngineConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::Input("batch size must be at least 1".into()));
        }
        if self.queue_size == 0 {
            return Err(Error::Input("queue size must be at least 1".into()));
        }
        Ok(())
    }
}

/// What the worker loaded.
#[derive(Debug, Clone)]
pub struct EngineInfo {
    /// The model as the user named it (a path, or the built-in default).
    pub model: String,
    pub config: Config,
    pub provenance: Provenance,
    pub device: Device,
    pub precision: Precision,
    /// Most frames per batch.
    pub batch_size: usize,
    /// Frames above this many pixels run as tiles (0: whole frames).
    pub max_pixels: i64,
    /// The shared model host, when the engine came from [`spawn_shared`].
    pub sharing: Option<Sharing>,
}

/// Per-frame timing. The stage times are those of the frame's whole batch.
#[derive(Debug, Clone, Copy)]
pub struct FrameTiming {
    /// When the frame was handed to [`EngineSender::send`].
    pub submitted: Instant,
    /// From `submitted` until its batch started (channel, batching wait, earlier batches).
    pub queue_wait: Duration,
    /// Frames in the batch this frame ran in.
    pub batch_frames: usize,
    /// The batch's stage times.
    pub stages: StageTimes,
    /// When the model finished the frame's batch (it then waits for the receiver).
    pub finished: Instant,
}

impl FrameTiming {
    /// The batch's model time divided by its frames.
    pub fn model_per_frame(&self) -> Duration {
        self.stages.model / self.batch_frames.max(1) as u32
    }
}

/// A cleaned frame, in the format it came in.
#[derive(Debug)]
pub struct DenoisedFrame<T> {
    pub payload: T,
    pub data: Vec<u8>,
    pub format: FrameFormat,
    pub timing: FrameTiming,
}

/// One item out of the engine, in input order.
#[derive(Debug)]
pub enum Output<T> {
    Frame(DenoisedFrame<T>),
    /// A marker sent with [`EngineSender::marker`] or [`EngineSender::drain`].
    Marker(T),
    /// The model failed on a batch; these are the payloads of its frames, in order. The
    /// engine keeps running (the next batch may succeed); whether to stop is the caller's call.
    Failed {
        error: Error,
        payloads: Vec<T>,
    },
}

/// Why a send did not go through.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("the engine is flushing")]
    Flushing,
    #[error("the model worker stopped")]
    Stopped,
    #[error(transparent)]
    Invalid(Error),
}

/// Why a receive returned nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    #[error("the engine is flushing")]
    Flushing,
    #[error("timed out")]
    Timeout,
    /// Every sender is gone, the worker finished and every output was delivered.
    #[error("the engine has finished")]
    Disconnected,
}

/// Start the worker: it loads `model` with `opts` on its own thread and owns it from then on.
/// A `max_pixels` of [`Options::AUTO_PIXELS`] becomes [`auto_max_pixels`] for the model, the
/// device and `cfg.batch_size` ([`EngineInfo::max_pixels`] says which). Loading failures (unreadable file, bad weights, missing CUDA device, fp16 on the CPU) are
/// returned here.
pub fn spawn<T: Send + 'static>(
    model: ModelSource,
    opts: Options,
    cfg: EngineConfig,
) -> Result<(EngineSender<T>, EngineReceiver<T>)> {
    let name = model.to_string();
    let batch = cfg.batch_size;
    spawn_with(name, move || load_denoiser(&model, opts, batch), cfg)
}

/// [`spawn`], on the process's one model for `model` and `opts` ([`host`]): engines started
/// with the same model, device, precision, pixel budget, batch size and threads share one
/// model thread and its memory, and may share network calls; each keeps its own order,
/// flushes, end of stream, temporal filter and counters. The model loads with the first and
/// unloads after the last.
pub fn spawn_shared<T: Send + 'static>(
    model: ModelSource,
    opts: Options,
    cfg: EngineConfig,
) -> Result<(EngineSender<T>, EngineReceiver<T>)> {
    let (name, batch) = (model.to_string(), cfg.batch_size);
    let key = HostKey::new(name.clone(), &opts, batch);
    spawn_with(
        name,
        move || SharedModel::attach(key, batch, move || load_denoiser(&model, opts, batch)),
        cfg,
    )
}

/// Load `model` for inference; an `auto` pixel budget is resolved for batches of `batch`.
fn load_denoiser(model: &ModelSource, mut opts: Options, batch: usize) -> Result<Denoiser> {
    let loaded = model.load(opts.device)?;
    if opts.max_pixels < 0 {
        opts.max_pixels = auto_max_pixels(&loaded.model.config, opts.device, batch);
    }
    if opts.precision == Precision::Auto && auto_precision::untimed(opts.device).is_none() {
        // `auto` on the CPU: a second copy to keep in bf16 until a frame size is timed.
        return Denoiser::new_auto(loaded, model.load(opts.device)?, opts);
    }
    Denoiser::new(loaded, opts)
}

/// Start the worker on the model `load` returns, called on the worker thread (the model never
/// changes threads). `name` is what [`EngineInfo::model`] reports. A loading failure or panic
/// is returned here.
pub fn spawn_with<T, M, F>(
    name: String,
    load: F,
    cfg: EngineConfig,
) -> Result<(EngineSender<T>, EngineReceiver<T>)>
where
    T: Send + 'static,
    M: FrameModel,
    F: FnOnce() -> Result<M> + Send + 'static,
{
    cfg.validate()?;
    let (in_tx, in_rx) = cb::bounded::<channel::Input<T>>(cfg.queue_size);
    let (out_tx, out_rx) = cb::bounded::<channel::Out<T>>(cfg.queue_size.max(cfg.batch_size));
    let (done_tx, done_rx) = cb::bounded::<()>(0);
    let (ready_tx, ready_rx) = cb::bounded::<Result<EngineInfo>>(1);
    let shared = control::Shared::new(cfg.strength.clone(), done_rx, in_rx.clone());
    let worker_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("clipdenoise-engine".into())
        .spawn(move || {
            let _done = done_tx;
            exit_guard::install();
            let Some(loading) = exit_guard::GUARD.enter() else {
                let _ = ready_tx.send(Err(Error::Interrupted));
                return;
            };
            let model = load_model(load);
            drop(loading);
            let model = match model {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let info = EngineInfo {
                model: name,
                config: model.config().clone(),
                provenance: model.provenance().clone(),
                device: model.device(),
                precision: model.precision(),
                batch_size: cfg.batch_size,
                max_pixels: model.max_pixels(),
                sharing: model.sharing(),
            };
            if ready_tx.send(Ok(info)).is_ok() {
                worker::Worker::new(model, cfg, worker_shared, in_rx, out_tx).run();
            }
        })
        .map_err(|e| Error::Input(format!("cannot start the model worker thread: {e}")))?;
    let info = match ready_rx.recv().unwrap_or(Err(Error::WorkerGone)) {
        Ok(info) => info,
        Err(e) => {
            let _ = handle.join();
            return Err(e);
        }
    };
    *control::lock(&shared.worker) = Some(handle);
    if let Some(sharing) = &info.sharing {
        sharing.join(shared.stats_handle());
    }
    let control = EngineControl::new(shared, info);
    Ok(channel::pair(in_tx, out_rx, control))
}

/// Run `load`, turning a panic into an error.
fn load_model<M, F: FnOnce() -> Result<M>>(load: F) -> Result<M> {
    catch_unwind(AssertUnwindSafe(load)).unwrap_or_else(|p| {
        Err(Error::Torch(format!(
            "loading the model panicked: {}",
            panic_text(&p)
        )))
    })
}

fn panic_text(p: &Box<dyn std::any::Any + Send>) -> String {
    p.downcast_ref::<String>()
        .map(|s| s.as_str())
        .or_else(|| p.downcast_ref::<&str>().copied())
        .unwrap_or("unknown panic")
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}
