//! The batching stage: the one place frames meet the model.
//!
//! [`spawn`] starts one worker thread that loads and owns the [`Denoiser`] (a `Tensor` is
//! `Send` but not `Sync`, so exactly one thread touches the model) and returns a channel pair,
//! as rav1e's `new_channel()` does:
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
//! crossbeam-channel stays private to this module.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel as cb;
use tch::Device;

use crate::error::{Error, Result};
use crate::frame::FrameFormat;
use crate::inference::{Denoiser, Options, Precision, StageTimes};
use crate::model::Config;
use crate::weights::{ModelSource, Provenance};

/// How many recent per-frame latencies the p99 is computed over.
const LATENCY_WINDOW: usize = 1024;

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
    /// Test hook: every batch fails once this many frames went through the model.
    #[doc(hidden)]
    pub fail_after_frames: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            batch_size: 4,
            max_latency: Duration::from_millis(50),
            queue_size: 16,
            strength: Strength::default(),
            fail_after_frames: None,
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

/// A snapshot of the engine's counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Frames accepted by `send`, plus those the caller reported dropped before sending.
    pub frames_in: u64,
    /// Frames delivered by the receiver.
    pub frames_out: u64,
    /// Frames discarded: flushed, failed in the model, or dropped by the caller (late).
    pub frames_dropped: u64,
    /// Batches that went through the model (failed ones included).
    pub batches: u64,
    /// Batches the model failed on.
    pub failed_batches: u64,
    pub mean_batch_size: f64,
    /// From `send` to delivery by the receiver, over every delivered frame.
    pub mean_latency_ms: f64,
    /// 99th percentile of the same, over the last 1024 delivered frames.
    pub p99_latency_ms: f64,
    /// From `send` to the start of the frame's batch.
    pub mean_queue_wait_ms: f64,
    /// Stage times per frame (batch time divided by its frames), averaged over frames.
    pub upload_ms_per_frame: f64,
    pub model_ms_per_frame: f64,
    pub download_ms_per_frame: f64,
    /// Upload + model + download of the most recent batch, in ms.
    pub last_batch_ms: f64,
    /// Largest upload + model + download of any batch, in ms.
    pub max_batch_ms: f64,
}

#[derive(Default)]
struct StatsAcc {
    frames_in: u64,
    frames_out: u64,
    frames_dropped: u64,
    batches: u64,
    failed_batches: u64,
    frames_run: u64,
    latency_sum: Duration,
    latency_window: VecDeque<f64>,
    queue_wait_sum: Duration,
    upload: Duration,
    model: Duration,
    download: Duration,
    last_batch: Duration,
    max_batch: Duration,
    /// Smoothed (upload + model + download) per frame, without warm-up batches (the first of
    /// each format: allocations, kernel selection).
    per_frame_estimate: Option<Duration>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

impl StatsAcc {
    fn snapshot(&self) -> Stats {
        let per = |d: Duration, n: u64| if n == 0 { 0.0 } else { ms(d) / n as f64 };
        let mut window: Vec<f64> = self.latency_window.iter().copied().collect();
        window.sort_by(f64::total_cmp);
        let p99 = if window.is_empty() {
            0.0
        } else {
            window[((window.len() as f64 * 0.99).ceil() as usize).clamp(1, window.len()) - 1]
        };
        Stats {
            frames_in: self.frames_in,
            frames_out: self.frames_out,
            frames_dropped: self.frames_dropped,
            batches: self.batches,
            failed_batches: self.failed_batches,
            mean_batch_size: if self.batches == 0 {
                0.0
            } else {
                self.frames_run as f64 / self.batches as f64
            },
            mean_latency_ms: per(self.latency_sum, self.frames_out),
            p99_latency_ms: p99,
            mean_queue_wait_ms: per(self.queue_wait_sum, self.frames_run),
            upload_ms_per_frame: per(self.upload, self.frames_run),
            model_ms_per_frame: per(self.model, self.frames_run),
            download_ms_per_frame: per(self.download, self.frames_run),
            last_batch_ms: ms(self.last_batch),
            max_batch_ms: ms(self.max_batch),
        }
    }
}

/// The flushing state and the wake-up signal of the current epoch: `abort_tx` is never used
/// to send; it is dropped by `flush_start`, which disconnects `abort_rx` and so wakes every
/// `select!` that waits on it.
struct Gate {
    flushing: bool,
    abort_tx: cb::Sender<()>,
    abort_rx: cb::Receiver<()>,
}

struct Shared {
    gate: Mutex<Gate>,
    epoch: AtomicU64,
    stats: Mutex<StatsAcc>,
    strength: Strength,
    /// Disconnected once the worker thread has exited (its sender lives on its stack).
    done: cb::Receiver<()>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// Empties the input channel, returning how many frames it discarded.
    discard_input: Box<dyn Fn() -> u64 + Send + Sync>,
}

/// Locks that survive a panic elsewhere (the data is counters and flags).
fn lock<G>(m: &Mutex<G>) -> MutexGuard<'_, G> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }
    /// (flushing, epoch, wake-up receiver of the epoch).
    fn current(&self) -> (bool, u64, cb::Receiver<()>) {
        let g = lock(&self.gate);
        (g.flushing, self.epoch(), g.abort_rx.clone())
    }
    fn stats(&self) -> MutexGuard<'_, StatsAcc> {
        lock(&self.stats)
    }
    fn dropped(&self, n: u64) {
        if n > 0 {
            self.stats().frames_dropped += n;
        }
    }
}

/// Control of a running engine, usable from any thread.
#[derive(Clone)]
pub struct EngineControl {
    shared: Arc<Shared>,
    info: Arc<EngineInfo>,
}

impl std::fmt::Debug for EngineControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineControl")
            .field("info", &self.info)
            .field("flushing", &self.is_flushing())
            .finish()
    }
}

impl EngineControl {
    /// Start flushing: blocked sends and receives return `Flushing` at once, queued and pending
    /// frames are discarded, and the batch the model may be running is dropped when it ends.
    /// Until [`EngineControl::flush_stop`] sends and receives fail with `Flushing`.
    pub fn flush_start(&self) {
        {
            let mut g = lock(&self.shared.gate);
            g.flushing = true;
            self.shared.epoch.fetch_add(1, Ordering::AcqRel);
            let (tx, rx) = cb::bounded(0);
            // Dropping the old sender wakes everything that waits on the old receiver.
            g.abort_tx = tx;
            g.abort_rx = rx;
        }
        let n = (self.shared.discard_input)();
        self.shared.dropped(n);
    }

    /// Accept frames again.
    pub fn flush_stop(&self) {
        lock(&self.shared.gate).flushing = false;
    }

    pub fn is_flushing(&self) -> bool {
        lock(&self.shared.gate).flushing
    }

    /// Whether the worker thread is still running.
    pub fn is_running(&self) -> bool {
        matches!(self.shared.done.try_recv(), Err(cb::TryRecvError::Empty))
    }

    /// Wait up to `timeout` for the worker to exit (drop the senders, or flush, first) and join
    /// it. Returns false if it is still running (for example inside a long model call); it
    /// then finishes on its own.
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        if let Err(cb::RecvTimeoutError::Timeout) = self.shared.done.recv_timeout(timeout) {
            return false;
        }
        if let Some(h) = lock(&self.shared.worker).take() {
            let _ = h.join();
        }
        true
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats().snapshot()
    }

    pub fn strength(&self) -> &Strength {
        &self.shared.strength
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// What a full batch is expected to take (upload, model, download): a moving average of
    /// the recent batches' time per frame, times `batch_size`. Warm-up batches (the first of
    /// each frame format) are left out, so this is None until a second batch of a format ran.
    pub fn batch_time_estimate(&self, batch_size: usize) -> Option<Duration> {
        self.shared
            .stats()
            .per_frame_estimate
            .map(|per_frame| per_frame * batch_size as u32)
    }
}

struct Input<T> {
    epoch: u64,
    item: InItem<T>,
}

enum InItem<T> {
    Frame {
        data: Vec<u8>,
        format: FrameFormat,
        payload: T,
        submitted: Instant,
    },
    Marker {
        payload: T,
        drain: bool,
    },
}

impl<T> Input<T> {
    fn frames(&self) -> u64 {
        matches!(self.item, InItem::Frame { .. }) as u64
    }
}

struct Out<T> {
    epoch: u64,
    item: Output<T>,
}

/// The input end. Cloneable; the stream ends when every clone is dropped.
pub struct EngineSender<T> {
    tx: cb::Sender<Input<T>>,
    control: EngineControl,
}

impl<T> Clone for EngineSender<T> {
    fn clone(&self) -> Self {
        EngineSender {
            tx: self.tx.clone(),
            control: self.control.clone(),
        }
    }
}

impl<T> std::fmt::Debug for EngineSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineSender")
            .field("control", &self.control)
            .finish()
    }
}

impl<T: Send + 'static> EngineSender<T> {
    /// Queue one packed frame. Blocks while the input channel is full; a flush aborts the wait.
    pub fn send(&self, data: Vec<u8>, format: FrameFormat, payload: T) -> Result<(), SendError> {
        let submitted = Instant::now();
        format.validate().map_err(SendError::Invalid)?;
        if data.len() != format.frame_len() {
            return Err(SendError::Invalid(Error::Input(format!(
                "a {:?} {}x{} frame needs {} bytes, got {}",
                format.format,
                format.width,
                format.height,
                format.frame_len(),
                data.len()
            ))));
        }
        // Counted first so that a snapshot never shows more frames out than in.
        self.control.shared.stats().frames_in += 1;
        self.push(InItem::Frame {
            data,
            format,
            payload,
            submitted,
        })
        .inspect_err(|_| {
            self.control.shared.stats().frames_in -= 1;
        })
    }

    /// Queue a marker: it comes out after every frame sent before it and before every frame
    /// sent after it, without cutting the batch short.
    pub fn marker(&self, payload: T) -> Result<(), SendError> {
        self.push(InItem::Marker {
            payload,
            drain: false,
        })
    }

    /// Queue a marker that also runs the pending partial batch at once (end of stream, format
    /// change, a drain request): it comes out right after the last frame sent before it.
    pub fn drain(&self, payload: T) -> Result<(), SendError> {
        self.push(InItem::Marker {
            payload,
            drain: true,
        })
    }

    /// Count frames the caller dropped instead of sending (late frames): they appear in
    /// `frames_in` and `frames_dropped`.
    pub fn record_dropped(&self, frames: u64) {
        let mut s = self.control.shared.stats();
        s.frames_in += frames;
        s.frames_dropped += frames;
    }

    pub fn control(&self) -> &EngineControl {
        &self.control
    }

    fn push(&self, item: InItem<T>) -> Result<(), SendError> {
        let shared = &self.control.shared;
        let (flushing, epoch, abort) = shared.current();
        if flushing {
            return Err(SendError::Flushing);
        }
        let msg = Input { epoch, item };
        // Fast path: room in the channel.
        let msg = match self.tx.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(cb::TrySendError::Disconnected(_)) => return Err(SendError::Stopped),
            Err(cb::TrySendError::Full(m)) => m,
        };
        cb::select! {
            send(self.tx, msg) -> r => r.map_err(|_| SendError::Stopped),
            recv(abort) -> _ => Err(SendError::Flushing),
            recv(shared.done) -> _ => Err(SendError::Stopped),
        }
    }
}

/// The output end. Cloneable (clones share the stream).
pub struct EngineReceiver<T> {
    rx: cb::Receiver<Out<T>>,
    control: EngineControl,
}

impl<T> Clone for EngineReceiver<T> {
    fn clone(&self) -> Self {
        EngineReceiver {
            rx: self.rx.clone(),
            control: self.control.clone(),
        }
    }
}

impl<T> std::fmt::Debug for EngineReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineReceiver")
            .field("control", &self.control)
            .finish()
    }
}

impl<T: Send + 'static> EngineReceiver<T> {
    /// The next output, in input order. Returns `Flushing` at once while flushing (and
    /// discards what is waiting), `Disconnected` once the stream has ended.
    pub fn recv(&self) -> Result<Output<T>, RecvError> {
        self.recv_deadline(None)
    }

    pub fn recv_timeout(&self, timeout: Duration) -> Result<Output<T>, RecvError> {
        self.recv_deadline(Some(Instant::now() + timeout))
    }

    /// Outputs until the stream ends (or a flush starts).
    pub fn iter(&self) -> impl Iterator<Item = Output<T>> + '_ {
        std::iter::from_fn(move || self.recv().ok())
    }

    pub fn control(&self) -> &EngineControl {
        &self.control
    }

    fn recv_deadline(&self, deadline: Option<Instant>) -> Result<Output<T>, RecvError> {
        let shared = &self.control.shared;
        loop {
            let (flushing, epoch, abort) = shared.current();
            if flushing {
                let mut n = 0;
                while let Ok(out) = self.rx.try_recv() {
                    n += out_frames(&out.item);
                }
                shared.dropped(n);
                return Err(RecvError::Flushing);
            }
            let timer = deadline.map(cb::at).unwrap_or_else(cb::never);
            let out = cb::select! {
                recv(self.rx) -> r => match r {
                    Ok(out) => out,
                    Err(_) => return Err(RecvError::Disconnected),
                },
                recv(abort) -> _ => continue,
                recv(timer) -> _ => return Err(RecvError::Timeout),
            };
            if out.epoch != epoch && out.epoch != shared.epoch() {
                shared.dropped(out_frames(&out.item));
                continue;
            }
            if let Output::Frame(f) = &out.item {
                let latency = f.timing.submitted.elapsed();
                let mut s = shared.stats();
                s.frames_out += 1;
                s.latency_sum += latency;
                if s.latency_window.len() == LATENCY_WINDOW {
                    s.latency_window.pop_front();
                }
                s.latency_window.push_back(ms(latency));
            }
            return Ok(out.item);
        }
    }
}

fn out_frames<T>(o: &Output<T>) -> u64 {
    match o {
        Output::Frame(_) => 1,
        Output::Marker(_) => 0,
        // Counted as dropped by the worker already.
        Output::Failed { .. } => 0,
    }
}

/// Start the worker: it loads `model` with `opts` on its own thread and owns it from then on.
/// Loading failures (unreadable file, bad weights, missing CUDA device, fp16 on the CPU) are
/// returned here.
pub fn spawn<T: Send + 'static>(
    model: ModelSource,
    opts: Options,
    cfg: EngineConfig,
) -> Result<(EngineSender<T>, EngineReceiver<T>)> {
    cfg.validate()?;
    let (in_tx, in_rx) = cb::bounded::<Input<T>>(cfg.queue_size);
    let (out_tx, out_rx) = cb::bounded::<Out<T>>(cfg.queue_size.max(cfg.batch_size));
    let (done_tx, done_rx) = cb::bounded::<()>(0);
    let (ready_tx, ready_rx) = cb::bounded::<Result<EngineInfo>>(1);
    let (abort_tx, abort_rx) = cb::bounded(0);
    let discard_rx = in_rx.clone();
    let shared = Arc::new(Shared {
        gate: Mutex::new(Gate {
            flushing: false,
            abort_tx,
            abort_rx,
        }),
        epoch: AtomicU64::new(0),
        stats: Mutex::new(StatsAcc::default()),
        strength: cfg.strength.clone(),
        done: done_rx,
        worker: Mutex::new(None),
        discard_input: Box::new(move || {
            let mut n = 0;
            while let Ok(m) = discard_rx.try_recv() {
                n += m.frames();
            }
            n
        }),
    });
    let worker_shared = shared.clone();
    let handle = std::thread::Builder::new()
        .name("clipdenoise-engine".into())
        .spawn(move || {
            let _done = done_tx;
            let name = model.to_string();
            let loaded = catch_unwind(AssertUnwindSafe(|| {
                let loaded = model.load(opts.device)?;
                Denoiser::new(loaded, opts)
            }))
            .unwrap_or_else(|p| {
                Err(Error::Torch(format!(
                    "loading the model panicked: {}",
                    panic_text(&p)
                )))
            });
            let denoiser = match loaded {
                Ok(d) => d,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let info = EngineInfo {
                model: name,
                config: denoiser.config().clone(),
                provenance: denoiser.provenance().clone(),
                device: denoiser.device(),
                precision: denoiser.options().precision,
            };
            if ready_tx.send(Ok(info)).is_err() {
                return;
            }
            Worker::new(denoiser, cfg, worker_shared, in_rx, out_tx).run();
        })
        .map_err(|e| Error::Input(format!("cannot start the model worker thread: {e}")))?;
    let info = match ready_rx.recv() {
        Ok(Ok(info)) => info,
        Ok(Err(e)) => {
            let _ = handle.join();
            return Err(e);
        }
        Err(_) => {
            let _ = handle.join();
            return Err(Error::WorkerGone);
        }
    };
    *lock(&shared.worker) = Some(handle);
    let control = EngineControl {
        shared,
        info: Arc::new(info),
    };
    Ok((
        EngineSender {
            tx: in_tx,
            control: control.clone(),
        },
        EngineReceiver {
            rx: out_rx,
            control,
        },
    ))
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

enum Pending<T> {
    Frame {
        data: Vec<u8>,
        payload: T,
        submitted: Instant,
    },
    Marker(T),
}

/// Every receiver is gone: nobody can take outputs any more.
struct ReceiversGone;

struct Worker<T> {
    denoiser: Denoiser,
    cfg: EngineConfig,
    shared: Arc<Shared>,
    input: cb::Receiver<Input<T>>,
    output: cb::Sender<Out<T>>,
    epoch: u64,
    abort: cb::Receiver<()>,
    pending: Vec<Pending<T>>,
    pending_frames: usize,
    format: Option<FrameFormat>,
    oldest: Option<Instant>,
    frames_run: u64,
    last_run_format: Option<FrameFormat>,
}

impl<T: Send + 'static> Worker<T> {
    fn new(
        denoiser: Denoiser,
        cfg: EngineConfig,
        shared: Arc<Shared>,
        input: cb::Receiver<Input<T>>,
        output: cb::Sender<Out<T>>,
    ) -> Self {
        let (_, epoch, abort) = shared.current();
        Worker {
            denoiser,
            cfg,
            shared,
            input,
            output,
            epoch,
            abort,
            pending: Vec::new(),
            pending_frames: 0,
            format: None,
            oldest: None,
            frames_run: 0,
            last_run_format: None,
        }
    }

    fn run(mut self) {
        let _ = self.run_inner();
    }

    fn run_inner(&mut self) -> Result<(), ReceiversGone> {
        let input = self.input.clone();
        loop {
            self.sync_epoch();
            if self.pending_frames >= self.cfg.batch_size {
                self.run_batch()?;
                continue;
            }
            let deadline = self.oldest.map(|t| t + self.cfg.max_latency);
            if deadline.is_some_and(|d| Instant::now() >= d) {
                // Overdue: take what is already queued (up to a full batch), then run.
                match input.try_recv() {
                    Ok(m) => self.accept(m)?,
                    Err(cb::TryRecvError::Empty) => self.run_batch()?,
                    Err(cb::TryRecvError::Disconnected) => return self.finish(),
                }
                continue;
            }
            let timer = deadline.map(cb::at).unwrap_or_else(cb::never);
            let abort = self.abort.clone();
            cb::select! {
                recv(input) -> m => match m {
                    Ok(m) => self.accept(m)?,
                    Err(_) => return self.finish(),
                },
                recv(abort) -> _ => {}
                recv(timer) -> _ => {}
            }
        }
    }

    /// Adopt the current epoch; pending work from an older one is discarded.
    fn sync_epoch(&mut self) {
        if self.shared.epoch() == self.epoch {
            return;
        }
        let (_, epoch, abort) = self.shared.current();
        self.epoch = epoch;
        self.abort = abort;
        let n = self.pending_frames as u64;
        self.clear_pending();
        self.shared.dropped(n);
    }

    fn stale(&self) -> bool {
        self.shared.epoch() != self.epoch
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
        self.pending_frames = 0;
        self.format = None;
        self.oldest = None;
    }

    fn accept(&mut self, m: Input<T>) -> Result<(), ReceiversGone> {
        if m.epoch != self.epoch {
            if m.epoch != self.shared.epoch() {
                self.shared.dropped(m.frames());
                return Ok(());
            }
            // Sent after a flush this worker has not seen yet.
            self.sync_epoch();
        }
        match m.item {
            InItem::Frame {
                data,
                format,
                payload,
                submitted,
            } => {
                if self.format.is_some_and(|f| f != format) {
                    self.run_batch()?;
                }
                self.format = Some(format);
                self.oldest.get_or_insert(submitted);
                self.pending.push(Pending::Frame {
                    data,
                    payload,
                    submitted,
                });
                self.pending_frames += 1;
                if self.pending_frames >= self.cfg.batch_size {
                    self.run_batch()?;
                }
            }
            InItem::Marker { payload, drain } => {
                self.pending.push(Pending::Marker(payload));
                if drain || self.pending_frames == 0 {
                    self.run_batch()?;
                }
            }
        }
        Ok(())
    }

    /// Input is closed: run what is pending, then stop.
    fn finish(&mut self) -> Result<(), ReceiversGone> {
        self.sync_epoch();
        self.run_batch()
    }

    /// Run the pending frames as one batch and emit everything pending in order.
    fn run_batch(&mut self) -> Result<(), ReceiversGone> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let items = std::mem::take(&mut self.pending);
        let n = self.pending_frames;
        let format = self.format;
        self.clear_pending();
        let Some(format) = format.filter(|_| n > 0) else {
            // Markers only.
            return self.emit(items.into_iter().filter_map(|p| match p {
                Pending::Marker(t) => Some(Output::Marker(t)),
                Pending::Frame { .. } => None,
            }));
        };

        let start = Instant::now();
        let strength = self.shared.strength.get();
        let result = {
            let frames: Vec<&[u8]> = items
                .iter()
                .filter_map(|p| match p {
                    Pending::Frame { data, .. } => Some(data.as_slice()),
                    Pending::Marker(_) => None,
                })
                .collect();
            if self
                .cfg
                .fail_after_frames
                .is_some_and(|limit| self.frames_run >= limit)
            {
                Err(Error::Torch("injected failure (test hook)".into()))
            } else {
                catch_unwind(AssertUnwindSafe(|| {
                    self.denoiser
                        .denoise_frames_timed(&frames, &format, strength)
                }))
                .unwrap_or_else(|p| {
                    Err(Error::Torch(format!(
                        "the model panicked: {}",
                        panic_text(&p)
                    )))
                })
            }
        };
        self.frames_run += n as u64;
        let warmup = self.last_run_format != Some(format);
        self.last_run_format = Some(format);
        {
            let mut s = self.shared.stats();
            s.batches += 1;
            s.frames_run += n as u64;
            match &result {
                Ok((_, t)) => {
                    s.upload += t.upload;
                    s.model += t.model;
                    s.download += t.download;
                    s.last_batch = t.total();
                    s.max_batch = s.max_batch.max(t.total());
                    if !warmup {
                        let per_frame = t.total() / n as u32;
                        s.per_frame_estimate = Some(match s.per_frame_estimate {
                            None => per_frame,
                            Some(old) => old.mul_f64(0.8) + per_frame.mul_f64(0.2),
                        });
                    }
                    for p in &items {
                        if let Pending::Frame { submitted, .. } = p {
                            s.queue_wait_sum += start.saturating_duration_since(*submitted);
                        }
                    }
                }
                Err(_) => {
                    s.failed_batches += 1;
                    s.frames_dropped += n as u64;
                }
            }
        }
        if self.stale() {
            // Flushed while the model ran.
            if result.is_ok() {
                self.shared.dropped(n as u64);
            }
            return Ok(());
        }
        match result {
            Ok((frames, stages)) => {
                let mut frames = frames.into_iter();
                let outs: Vec<Output<T>> = items
                    .into_iter()
                    .map(|p| match p {
                        Pending::Marker(t) => Output::Marker(t),
                        Pending::Frame {
                            payload, submitted, ..
                        } => Output::Frame(DenoisedFrame {
                            payload,
                            data: frames.next().unwrap_or_default(),
                            format,
                            timing: FrameTiming {
                                submitted,
                                queue_wait: start.saturating_duration_since(submitted),
                                batch_frames: n,
                                stages,
                            },
                        }),
                    })
                    .collect();
                self.emit(outs)
            }
            Err(error) => {
                let mut payloads = Vec::with_capacity(n);
                let mut markers = Vec::new();
                for p in items {
                    match p {
                        Pending::Frame { payload, .. } => payloads.push(payload),
                        Pending::Marker(t) => markers.push(Output::Marker(t)),
                    }
                }
                self.emit(std::iter::once(Output::Failed { error, payloads }).chain(markers))
            }
        }
    }

    /// Send outputs in order; a flush that starts meanwhile discards the rest.
    fn emit(&mut self, outs: impl IntoIterator<Item = Output<T>>) -> Result<(), ReceiversGone> {
        for item in outs {
            if self.stale() {
                self.shared.dropped(out_frames(&item));
                continue;
            }
            let msg = Out {
                epoch: self.epoch,
                item,
            };
            let msg = match self.output.try_send(msg) {
                Ok(()) => continue,
                Err(cb::TrySendError::Disconnected(_)) => return Err(ReceiversGone),
                Err(cb::TrySendError::Full(m)) => m,
            };
            let frames = out_frames(&msg.item);
            let abort = self.abort.clone();
            cb::select! {
                send(self.output, msg) -> r => if r.is_err() { return Err(ReceiversGone) },
                recv(abort) -> _ => self.shared.dropped(frames),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::PixelFormat;
    use std::path::PathBuf;
    use std::sync::atomic::AtomicUsize;

    fn fixture() -> ModelSource {
        ModelSource::File(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/tiny-w8/official_state_dict.safetensors"),
        )
    }

    fn cfg(batch_size: usize, max_latency_ms: u64, queue_size: usize) -> EngineConfig {
        EngineConfig {
            batch_size,
            max_latency: Duration::from_millis(max_latency_ms),
            queue_size,
            ..Default::default()
        }
    }

    fn start(c: EngineConfig) -> (EngineSender<usize>, EngineReceiver<usize>) {
        spawn(fixture(), Options::default(), c).expect("engine starts")
    }

    fn fmt(w: usize, h: usize) -> FrameFormat {
        FrameFormat::new(PixelFormat::Rgb, w, h)
    }

    fn frame(f: &FrameFormat, seed: usize) -> Vec<u8> {
        (0..f.frame_len())
            .map(|i| ((i * 31 + seed * 97 + (i / 5) * 13) % 251) as u8)
            .collect()
    }

    const T: Duration = Duration::from_secs(20);

    fn next_frame(rx: &EngineReceiver<usize>) -> DenoisedFrame<usize> {
        match rx.recv_timeout(T) {
            Ok(Output::Frame(f)) => f,
            Ok(Output::Marker(m)) => panic!("marker {m} where a frame was expected"),
            Ok(Output::Failed { error, .. }) => panic!("failed: {error}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn order_is_kept_and_output_matches_the_denoiser() {
        let (tx, rx) = start(cfg(4, 60_000, 16));
        let f = fmt(24, 16);
        let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(&f, i)).collect();
        for (i, d) in frames.iter().enumerate() {
            tx.send(d.clone(), f, i).unwrap();
        }
        drop(tx);
        let outs: Vec<DenoisedFrame<usize>> = (0..10).map(|_| next_frame(&rx)).collect();
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
        assert_eq!(
            outs.iter().map(|o| o.payload).collect::<Vec<_>>(),
            (0..10).collect::<Vec<_>>()
        );
        assert_eq!(
            outs.iter()
                .map(|o| o.timing.batch_frames)
                .collect::<Vec<_>>(),
            [4, 4, 4, 4, 4, 4, 4, 4, 2, 2]
        );

        // Same batches through the core API directly: identical bytes.
        let d = Denoiser::new(fixture().load(Device::Cpu).unwrap(), Options::default()).unwrap();
        for chunk in [0..4, 4..8, 8..10] {
            let refs: Vec<&[u8]> = frames[chunk.clone()].iter().map(|v| v.as_slice()).collect();
            let want = d.denoise_frames(&refs, &f, 1.0).unwrap();
            for (i, w) in chunk.zip(want) {
                assert!(
                    outs[i].data == w,
                    "frame {i} differs from Denoiser::denoise_frames"
                );
            }
        }
        let s = rx.control().stats();
        assert_eq!(
            (s.frames_in, s.frames_out, s.frames_dropped, s.batches),
            (10, 10, 0, 3)
        );
        assert!((s.mean_batch_size - 10.0 / 3.0).abs() < 1e-9);
        assert!(s.model_ms_per_frame > 0.0 && s.p99_latency_ms >= s.mean_latency_ms * 0.5);
        assert!(rx.control().join_timeout(Duration::from_secs(5)));
        assert!(!rx.control().is_running());
    }

    #[test]
    fn partial_batch_runs_after_max_latency() {
        let (tx, rx) = start(cfg(8, 150, 16));
        let f = fmt(16, 16);
        let t0 = Instant::now();
        for i in 0..3 {
            tx.send(frame(&f, i), f, i).unwrap();
        }
        let outs: Vec<_> = (0..3).map(|_| next_frame(&rx)).collect();
        let waited = t0.elapsed();
        assert!(
            waited >= Duration::from_millis(150),
            "ran before max-latency: {waited:?}"
        );
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert!(outs.iter().all(|o| o.timing.batch_frames == 3));
        assert!(outs[0].timing.queue_wait >= Duration::from_millis(150));
        // The sender is still alive: the worker did not wait for more frames.
        drop(tx);
    }

    #[test]
    fn drain_runs_the_partial_batch_and_markers_keep_their_place() {
        let (tx, rx) = start(cfg(8, 3_600_000, 16));
        let f = fmt(16, 8);
        tx.send(frame(&f, 0), f, 0).unwrap();
        tx.marker(100).unwrap();
        tx.send(frame(&f, 1), f, 1).unwrap();
        tx.drain(101).unwrap();
        let t0 = Instant::now();
        let a = next_frame(&rx);
        assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(100))));
        let b = next_frame(&rx);
        assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(101))));
        assert!(t0.elapsed() < Duration::from_secs(10));
        assert_eq!((a.payload, b.payload), (0, 1));
        // One batch: the plain marker did not cut it.
        assert_eq!((a.timing.batch_frames, b.timing.batch_frames), (2, 2));
        // A marker with nothing pending comes out at once.
        tx.marker(102).unwrap();
        assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(102))));
    }

    #[test]
    fn format_change_runs_the_batch() {
        let (tx, rx) = start(cfg(4, 3_600_000, 16));
        let (f1, f2) = (fmt(16, 16), FrameFormat::new(PixelFormat::I420, 10, 6));
        tx.send(frame(&f1, 0), f1, 0).unwrap();
        tx.send(frame(&f1, 1), f1, 1).unwrap();
        tx.send(frame(&f2, 2), f2, 2).unwrap();
        drop(tx);
        let outs: Vec<_> = (0..3).map(|_| next_frame(&rx)).collect();
        assert_eq!(
            outs.iter()
                .map(|o| o.timing.batch_frames)
                .collect::<Vec<_>>(),
            [2, 2, 1]
        );
        assert_eq!(outs[2].format, f2);
        assert_eq!(outs[2].data.len(), f2.frame_len());
    }

    #[test]
    fn flush_discards_pending_and_resets() {
        let (tx, rx) = start(cfg(8, 3_600_000, 16));
        let f = fmt(16, 16);
        for i in 0..3 {
            tx.send(frame(&f, i), f, i).unwrap();
        }
        let ctl = tx.control().clone();
        ctl.flush_start();
        assert!(matches!(
            tx.send(frame(&f, 9), f, 9),
            Err(SendError::Flushing)
        ));
        assert!(matches!(tx.marker(9), Err(SendError::Flushing)));
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Flushing);
        ctl.flush_stop();
        tx.send(frame(&f, 99), f, 99).unwrap();
        tx.drain(1000).unwrap();
        let out = next_frame(&rx);
        assert_eq!(out.payload, 99);
        assert_eq!(out.timing.batch_frames, 1);
        assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(1000))));
        let s = ctl.stats();
        assert_eq!((s.frames_in, s.frames_out, s.frames_dropped), (4, 1, 3));
    }

    #[test]
    fn flush_unblocks_a_full_queue_and_a_waiting_receiver() {
        let (tx, rx) = start(cfg(1, 0, 1));
        let f = fmt(8, 8);
        let sent = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (tx, sent) = (tx.clone(), sent.clone());
            std::thread::spawn(move || loop {
                let i = sent.load(Ordering::SeqCst);
                match tx.send(frame(&f, i), f, i) {
                    Ok(()) => sent.fetch_add(1, Ordering::SeqCst),
                    Err(e) => return e,
                };
            })
        };
        // Nobody receives: the output channel fills, then the input, then the producer blocks.
        let mut last = usize::MAX;
        while sent.load(Ordering::SeqCst) != last {
            last = sent.load(Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(last <= 5, "queue not bounded: {last} frames accepted");
        let t0 = Instant::now();
        tx.control().flush_start();
        let err = producer.join().unwrap();
        assert!(matches!(err, SendError::Flushing), "{err:?}");
        assert!(t0.elapsed() < Duration::from_millis(500));
        assert_eq!(rx.recv().unwrap_err(), RecvError::Flushing);

        // A receiver blocked on an empty channel wakes up too.
        tx.control().flush_stop();
        let waiter = {
            let rx = rx.clone();
            std::thread::spawn(move || rx.recv().map(|_| ()))
        };
        std::thread::sleep(Duration::from_millis(100));
        tx.control().flush_start();
        assert_eq!(waiter.join().unwrap().unwrap_err(), RecvError::Flushing);
    }

    #[test]
    fn a_full_queue_blocks_the_producer() {
        let (tx, rx) = start(cfg(2, 0, 3));
        let f = fmt(8, 8);
        let sent = Arc::new(AtomicUsize::new(0));
        let producer = {
            let (tx, sent) = (tx.clone(), sent.clone());
            std::thread::spawn(move || {
                for i in 0..40 {
                    tx.send(frame(&f, i), f, i).unwrap();
                    sent.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        std::thread::sleep(Duration::from_millis(800));
        // Input (3) + output (3) + a batch in hand (2) + one being moved: far below 40.
        let held = sent.load(Ordering::SeqCst);
        assert!(held < 12, "{held} frames accepted without a consumer");
        assert!(!producer.is_finished());
        drop(tx);
        let got: Vec<usize> = (0..40).map(|_| next_frame(&rx).payload).collect();
        assert_eq!(got, (0..40).collect::<Vec<_>>());
        producer.join().unwrap();
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
    }

    #[test]
    fn model_errors_come_out_as_items() {
        let c = EngineConfig {
            fail_after_frames: Some(2),
            ..cfg(2, 3_600_000, 8)
        };
        let (tx, rx) = start(c);
        let f = fmt(8, 8);
        for i in 0..5 {
            tx.send(frame(&f, i), f, i).unwrap();
        }
        tx.drain(77).unwrap();
        assert_eq!(next_frame(&rx).payload, 0);
        assert_eq!(next_frame(&rx).payload, 1);
        match rx.recv_timeout(T) {
            Ok(Output::Failed { error, payloads }) => {
                assert_eq!(payloads, [2, 3]);
                assert!(error.to_string().contains("injected"), "{error}");
            }
            _ => panic!("expected a failure"),
        }
        assert!(
            matches!(rx.recv_timeout(T), Ok(Output::Failed { payloads, .. }) if payloads == [4])
        );
        assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(77))));
        drop(tx);
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
        let s = rx.control().stats();
        assert_eq!(
            (s.frames_out, s.frames_dropped, s.failed_batches, s.batches),
            (2, 3, 2, 3)
        );
    }

    #[test]
    fn loading_failures_are_reported_by_spawn() {
        let missing = ModelSource::File(PathBuf::from("/nonexistent/model.safetensors"));
        let err = spawn::<()>(missing, Options::default(), EngineConfig::default()).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/model.safetensors"),
            "{err}"
        );
        let fp16 = Options {
            precision: Precision::Fp16,
            ..Default::default()
        };
        assert!(spawn::<()>(fixture(), fp16, EngineConfig::default()).is_err());
        if !tch::Cuda::is_available() {
            let cuda = Options {
                device: Device::Cuda(0),
                ..Default::default()
            };
            assert!(spawn::<()>(fixture(), cuda, EngineConfig::default()).is_err());
        }
        let bad = EngineConfig {
            batch_size: 0,
            ..Default::default()
        };
        assert!(spawn::<()>(fixture(), Options::default(), bad).is_err());
        let (tx, _rx) = start(cfg(1, 0, 1));
        let err = tx.send(vec![0; 5], fmt(4, 4), 0).unwrap_err();
        assert!(matches!(err, SendError::Invalid(_)), "{err}");
    }

    #[test]
    fn dropping_the_sender_ends_the_worker() {
        let (tx, rx) = start(cfg(4, 3_600_000, 4));
        let f = fmt(8, 8);
        tx.send(frame(&f, 0), f, 0).unwrap();
        let ctl = tx.control().clone();
        assert!(ctl.is_running());
        drop(tx);
        assert_eq!(next_frame(&rx).payload, 0);
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
        assert!(ctl.join_timeout(Duration::from_secs(5)));
        assert!(!ctl.is_running());

        // Dropping the receivers ends it too, even with outputs nobody will take.
        let (tx, rx) = start(cfg(1, 0, 1));
        let ctl = tx.control().clone();
        drop(rx);
        tx.send(frame(&f, 0), f, 0).unwrap();
        let _ = tx.send(frame(&f, 1), f, 1);
        assert!(ctl.join_timeout(Duration::from_secs(5)));
        assert!(matches!(
            tx.send(frame(&f, 2), f, 2),
            Err(SendError::Stopped)
        ));
    }

    #[test]
    fn strength_zero_returns_the_input_and_changes_while_running() {
        let strength = Strength::new(0.0);
        let (tx, rx) = start(EngineConfig {
            strength: strength.clone(),
            ..cfg(1, 0, 4)
        });
        let f = fmt(12, 8);
        let input = frame(&f, 3);
        tx.send(input.clone(), f, 0).unwrap();
        assert!(next_frame(&rx).data == input);
        // The first batch of a format is a warm-up: no batch time estimate from it.
        assert!(rx.control().batch_time_estimate(4).is_none());
        strength.set(1.0);
        assert_eq!(rx.control().strength().get(), 1.0);
        tx.send(input.clone(), f, 1).unwrap();
        assert!(next_frame(&rx).data != input);
        assert!(rx.control().batch_time_estimate(4).is_some());
        strength.set(7.0);
        assert_eq!(strength.get(), 1.0);
    }
}
