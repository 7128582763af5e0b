//! The `clipdenoise` element (see mod.rs): sink chain -> engine -> src pad task.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, LazyLock, Mutex, MutexGuard};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;

use clipdenoise::auto_precision::PrecisionChoice;
use clipdenoise::engine::{
    self, DenoisedFrame, EngineConfig, EngineControl, EngineReceiver, EngineSender, Output,
    RecvError, SendError, Strength,
};
use clipdenoise::frame::FrameFormat;
use clipdenoise::inference::{self, DeviceRequest, Options};
use clipdenoise::temporal::MAX_LOOKAHEAD;
use clipdenoise::weights::ModelSource;

use super::auto;
use super::eos::EosGate;
use super::live::{self, Pace};
use super::props;
use super::stats;
use crate::frames::{frame_format, pack, unpack};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "clipdenoise",
        gst::DebugColorFlags::empty(),
        Some("CLIPDenoising video denoiser"),
    )
});

const DEFAULT_DEVICE: &str = "auto";
const DEFAULT_MODEL: &str = "default";
/// Where gst-inspect-1.0 points for the element's documentation.
const DOC_URI: &str = "https://github.com/clipdenoise/clipdenoise#gstreamer";
/// 0: chosen from the device ([`auto::batch_size`]).
const DEFAULT_BATCH_SIZE: u32 = 0;
const DEFAULT_MAX_LATENCY_MS: u32 = 50;
const DEFAULT_QUEUE_SIZE: u32 = 8;
/// auto: on the CPU the faster of fp32 and bf16 on the negotiated size (bf16 only within
/// 0.05 dB of fp32), timed during the warm-up; on CUDA bf16.
const DEFAULT_PRECISION: Precision = Precision::Auto;
/// 0: chosen from the model and the device ([`auto::max_pixels`]).
const DEFAULT_MAX_PIXELS: u64 = 0;
const DEFAULT_STRENGTH: f64 = 1.0;
/// The longest READY->PAUSED waits for the model's warm-up (`precision=auto` times both
/// precisions on the CPU first: seconds for a large frame on a slow machine).
const WARM_UP_WAIT: Duration = Duration::from_secs(60);
/// Temporal denoising on by default: the motion-aligned fusion of each frame's input with the
/// earlier ones (src/temporal/), +0.4 to +0.6 dB over frame by frame on the compressed-video
/// evaluation (weights/README.md); no ghosting on the moving-object tests.
const DEFAULT_TEMPORAL: f64 = 0.5;
/// Causal by default (live sources): no frame waits for later ones.
const DEFAULT_LOOKAHEAD: u32 = 0;
/// The most frames of lookahead (each costs a motion search per frame and a frame of memory).
const DEFAULT_QOS: bool = true;
const DEFAULT_SHARE_MODEL: bool = true;
const DEFAULT_COARSE_GRAIN: bool = false;
/// `off`: the network's output as it is (weights/README.md, "The Wiener refinement").
const DEFAULT_REFINE: &str = "off";

/// How long READY->NULL waits for the model worker to exit. A flush interrupts the running
/// batch at its next step (before or after the network, between tiles), so the worker is
/// usually gone at once; past this bound it is left to finish that step on its own (and the
/// process waits for it before exiting: see the engine's exit guard).
const WORKER_JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The `precision` property's GObject enum (gst-inspect lists its nicks): a mirror of
/// [`inference::Precision`], which is what the model runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, glib::Enum)]
#[repr(u32)]
#[enum_type(name = "GstClipDenoisePrecision")]
pub enum Precision {
    #[enum_value(name = "32-bit float", nick = "fp32")]
    Fp32 = 0,
    #[enum_value(name = "16-bit float (CUDA only)", nick = "fp16")]
    Fp16 = 1,
    #[enum_value(name = "bfloat16", nick = "bf16")]
    Bf16 = 2,
    #[enum_value(
        name = "auto: the faster of fp32 and bf16 on the CPU (timed at warm-up), bf16 on CUDA",
        nick = "auto"
    )]
    Auto = 3,
}

impl From<Precision> for inference::Precision {
    fn from(p: Precision) -> Self {
        match p {
            Precision::Fp32 => inference::Precision::Fp32,
            Precision::Fp16 => inference::Precision::Fp16,
            Precision::Bf16 => inference::Precision::Bf16,
            Precision::Auto => inference::Precision::Auto,
        }
    }
}

/// Property values.
#[derive(Debug, Clone, PartialEq)]
struct Settings {
    model: String,
    device: String,
    batch_size: u32,
    max_latency_ms: u32,
    queue_size: u32,
    precision: Precision,
    max_pixels: u64,
    strength: f64,
    temporal: f64,
    lookahead: u32,
    temporal_origin: i64,
    qos: bool,
    share_model: bool,
    coarse_grain: bool,
    /// What runs after the network, as `Refine` writes it (checked when set).
    refine: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            model: DEFAULT_MODEL.into(),
            device: DEFAULT_DEVICE.into(),
            batch_size: DEFAULT_BATCH_SIZE,
            max_latency_ms: DEFAULT_MAX_LATENCY_MS,
            queue_size: DEFAULT_QUEUE_SIZE,
            precision: DEFAULT_PRECISION,
            max_pixels: DEFAULT_MAX_PIXELS,
            strength: DEFAULT_STRENGTH,
            temporal: DEFAULT_TEMPORAL,
            lookahead: DEFAULT_LOOKAHEAD,
            temporal_origin: -1,
            qos: DEFAULT_QOS,
            share_model: DEFAULT_SHARE_MODEL,
            coarse_grain: DEFAULT_COARSE_GRAIN,
            refine: DEFAULT_REFINE.into(),
        }
    }
}

impl Settings {
    /// The settings an engine is built from: a change needs a new engine.
    fn engine_key(&self) -> Settings {
        Settings {
            strength: DEFAULT_STRENGTH,
            temporal: DEFAULT_TEMPORAL,
            qos: DEFAULT_QOS,
            ..self.clone()
        }
    }
}

/// What travels through the engine with each frame or in place of one.
enum Item {
    /// The input buffer's flags, timestamps and metas, without memory.
    Buffer(gst::Buffer),
    /// A serialized event, kept in order with the frames.
    Event(gst::Event),
    /// A drain request: answered once every earlier frame was pushed downstream. Dropping it
    /// (a flush) wakes the waiter too.
    Barrier(mpsc::SyncSender<()>),
    /// A whole input buffer that goes downstream as it is (`strength=0`), in order.
    Passthrough(gst::Buffer),
}

/// The running engine, created in NULL->READY and dropped in READY->NULL.
struct State {
    sender: EngineSender<Item>,
    receiver: EngineReceiver<Item>,
    key: Settings,
    max_latency: gst::ClockTime,
    batch_size: usize,
    /// Frames each frame waits for (offline mode).
    lookahead: u32,
}

/// What the sink side knows about the stream.
#[derive(Default)]
struct SinkState {
    info: Option<gst_video::VideoInfo>,
    format: Option<FrameFormat>,
    segment: gst::FormattedSegment<gst::ClockTime>,
    /// The input's frame interval (from the caps, or from upstream's fixed caps before them).
    frame_interval: Option<Duration>,
}

/// What the src side knows about the stream.
#[derive(Default)]
struct SrcState {
    /// The caps last pushed downstream.
    info: Option<gst_video::VideoInfo>,
    /// The latency last reported in a LATENCY query.
    reported_latency: Option<gst::ClockTime>,
    /// When a LATENCY message was last posted.
    latency_posted: Option<std::time::Instant>,
}

/// QoS from downstream.
#[derive(Default)]
struct Qos {
    earliest: Option<gst::ClockTime>,
    proportion: f64,
    processed: u64,
    dropped: u64,
}

pub struct ClipDenoise {
    sinkpad: gst::Pad,
    srcpad: gst::Pad,
    settings: Mutex<Settings>,
    /// Shared with the running engine, so changes apply from the next batch.
    strength: Strength,
    /// The temporal smoothing amount, shared with the running engine like `strength`.
    temporal: Strength,
    state: Mutex<Option<State>>,
    sink_state: Mutex<SinkState>,
    src_state: Mutex<SrcState>,
    /// The result of the src pad task's last push, returned by the chain function.
    flow: Mutex<Result<gst::FlowSuccess, gst::FlowError>>,
    qos: Mutex<Qos>,
    /// Stats of the last engine, readable after it stopped.
    last_stats: Mutex<Option<engine::Stats>>,
    /// EOS downstream exactly once, also after a downstream flow error stopped the task.
    eos: EosGate,
    /// Buffers passed through untouched (`strength=0`).
    passed_through: AtomicU64,
    /// Live frames dropped because the model was behind.
    thinned: AtomicU64,
    /// Whether upstream is live (from the last LATENCY query).
    live: AtomicBool,
    /// The precision choice last logged (`precision=auto` chooses at the warm-up).
    logged_precision: Mutex<Option<PrecisionChoice>>,
}

/// Locks that survive a panic elsewhere.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A model that did not load, as the element's error (naming the model).
fn load_error(e: clipdenoise::Error, model: &ModelSource) -> gst::ErrorMessage {
    let domain = match &e {
        clipdenoise::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            gst::ResourceError::NotFound
        }
        clipdenoise::Error::DeviceUnavailable(..) => gst::ResourceError::NotFound,
        clipdenoise::Error::Input(_) => gst::ResourceError::Settings,
        _ => gst::ResourceError::OpenRead,
    };
    let text = e.to_string();
    let name = model.to_string();
    let text = if text.contains(&name) {
        text
    } else {
        format!("{name}: {text}")
    };
    gst::error_msg!(domain, ("Could not load the model: {}", text))
}

/// A buffer with `buffer`'s flags, timestamps and metas but no memory. The video meta is left
/// out: output buffers have the default layout for the caps.
fn metadata_only(buffer: &gst::BufferRef) -> Result<gst::Buffer, glib::BoolError> {
    let mut meta = gst::Buffer::new();
    {
        let m = meta
            .get_mut()
            .ok_or_else(|| glib::bool_error!("a new buffer is not writable"))?;
        buffer.copy_into(
            m,
            gst::BufferCopyFlags::FLAGS
                | gst::BufferCopyFlags::TIMESTAMPS
                | gst::BufferCopyFlags::META,
            ..,
        )?;
        m.foreach_meta_mut(|meta| {
            if meta.api() == gst_video::VideoMeta::meta_api() {
                ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Remove)
            } else {
                ControlFlow::Continue(gst::buffer::BufferMetaForeachAction::Keep)
            }
        });
    }
    Ok(meta)
}

impl ClipDenoise {
    fn sender(&self) -> Option<EngineSender<Item>> {
        lock(&self.state).as_ref().map(|s| s.sender.clone())
    }

    fn receiver(&self) -> Option<EngineReceiver<Item>> {
        lock(&self.state).as_ref().map(|s| s.receiver.clone())
    }

    fn control(&self) -> Option<EngineControl> {
        lock(&self.state)
            .as_ref()
            .map(|s| s.sender.control().clone())
    }

    fn flow(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        *lock(&self.flow)
    }

    fn set_flow(&self, flow: Result<gst::FlowSuccess, gst::FlowError>) {
        *lock(&self.flow) = flow;
    }

    /// The engine on the model: [`engine::spawn`] (under `cfg(test)`, the tests may give this
    /// element a failing model instead).
    fn spawn_engine(
        &self,
        model: &ModelSource,
        opts: Options,
        cfg: EngineConfig,
    ) -> clipdenoise::Result<(EngineSender<Item>, EngineReceiver<Item>)> {
        #[cfg(test)]
        if let Some(r) = super::tests::spawn(self.obj().name().as_str(), model, &opts, &cfg) {
            return r;
        }
        if lock(&self.settings).share_model {
            engine::spawn_shared(model.clone(), opts, cfg)
        } else {
            engine::spawn(model.clone(), opts, cfg)
        }
    }

    /// The device of the `device` property (`auto` without CUDA: the CPU, said at INFO).
    fn device(&self, settings: &Settings) -> Result<tch::Device, gst::ErrorMessage> {
        let request: DeviceRequest = settings.device.parse().map_err(|e| {
            gst::error_msg!(gst::ResourceError::Settings, ("Invalid device: {}", e))
        })?;
        let device = request
            .resolve()
            .map_err(|e| gst::error_msg!(gst::ResourceError::NotFound, ("{}", e)))?;
        if request == DeviceRequest::Auto && device == tch::Device::Cpu {
            // The expected case on machines without a GPU: no WARNING on every run.
            gst::info!(
                CAT,
                imp = self,
                "device=auto: no CUDA, the model runs on the CPU"
            );
        }
        Ok(device)
    }

    /// Load the model and start the engine (NULL->READY).
    fn start_engine(&self) -> Result<(), gst::ErrorMessage> {
        let settings = lock(&self.settings).clone();
        let device = self.device(&settings)?;
        let name = settings.model.as_str();
        let model = ModelSource::resolve(name).map_err(|e| {
            gst::error_msg!(
                gst::ResourceError::NotFound,
                ("Could not load the model: {}", e)
            )
        })?;
        let wait_policy = std::env::var("OMP_WAIT_POLICY").ok();
        let opts = Options {
            device,
            precision: settings.precision.into(),
            max_pixels: auto::max_pixels(settings.max_pixels),
            cpu_threads: auto::cpu_threads(device, wait_policy.as_deref()),
            coarse_grain: settings.coarse_grain,
            refine: settings.refine.parse().map_err(|e| {
                gst::error_msg!(gst::ResourceError::Settings, ("Invalid refine: {}", e))
            })?,
            ..Options::default()
        };
        let threads = opts.cpu_threads;
        let batch_size = auto::batch_size(settings.batch_size, device);
        let cfg = EngineConfig {
            batch_size,
            max_latency: Duration::from_millis(settings.max_latency_ms.into()),
            queue_size: settings.queue_size as usize,
            strength: self.strength.clone(),
            temporal: self.temporal.clone(),
            lookahead: settings.lookahead as usize,
            temporal_origin: u64::try_from(settings.temporal_origin).ok(),
        };
        let (sender, receiver) = self
            .spawn_engine(&model, opts, cfg)
            .map_err(|e| load_error(e, &model))?;
        self.log_loaded(sender.control().info(), threads, wait_policy.as_deref());
        *lock(&self.state) = Some(State {
            sender,
            receiver,
            key: settings.engine_key(),
            max_latency: gst::ClockTime::from_mseconds(settings.max_latency_ms.into()),
            batch_size,
            lookahead: settings.lookahead,
        });
        Ok(())
    }

    fn log_loaded(&self, info: &engine::EngineInfo, threads: usize, wait_policy: Option<&str>) {
        gst::info!(
            CAT,
            imp = self,
            "Loaded {} (width {}, {:?}, {}) on {:?}",
            info.model,
            info.config.width,
            info.config.blocks,
            info.precision,
            info.device
        );
        if let Some(shared) = &info.sharing {
            gst::info!(
                CAT,
                imp = self,
                "On shared model {} ({} streams on it)",
                shared.id,
                shared.streams()
            );
        }
        let settings = lock(&self.settings).clone();
        let how = |auto: bool| if auto { "auto" } else { "set" };
        gst::debug!(
            CAT,
            imp = self,
            "batch-size {} ({}), max-pixels {} ({}; 0: whole frames)",
            info.batch_size,
            how(settings.batch_size == 0),
            info.max_pixels,
            how(settings.max_pixels == 0)
        );
        gst::info!(
            CAT,
            imp = self,
            "OpenMP wait policy {}, model threads {}",
            wait_policy.unwrap_or("unset"),
            if threads > 0 {
                threads.to_string()
            } else {
                "all".into()
            }
        );
        if threads > 0 {
            gst::debug!(
                CAT,
                imp = self,
                "OMP_WAIT_POLICY is {:?}: libtorch's idle threads spin, so the model uses {} \
                 threads and leaves the other cores to the pipeline (OMP_WAIT_POLICY=PASSIVE: all)",
                wait_policy,
                threads
            );
        }
    }

    /// Stop the engine (READY->NULL): discard what is queued, let the worker go.
    fn stop_engine(&self) {
        let Some(state) = lock(&self.state).take() else {
            return;
        };
        let control = state.sender.control().clone();
        control.flush_start();
        drop(state);
        let t0 = std::time::Instant::now();
        if control.join_timeout(WORKER_JOIN_TIMEOUT) {
            gst::debug!(CAT, imp = self, "Worker joined in {:?}", t0.elapsed());
        } else {
            gst::warning!(
                CAT,
                imp = self,
                "The model worker is still busy with a batch; it exits when the batch ends"
            );
        }
        let stats = control.stats();
        gst::info!(
            CAT,
            imp = self,
            "Stopped: frames-in={} frames-out={} frames-dropped={} batches={} mean-batch-size={:.2} mean-latency-ms={:.1} p99-latency-ms={:.1} model-ms-per-frame={:.2}",
            stats.frames_in,
            stats.frames_out,
            stats.frames_dropped,
            stats.batches,
            stats.mean_batch_size,
            stats.mean_latency_ms,
            stats.p99_latency_ms,
            stats.model_ms_per_frame
        );
        *lock(&self.last_stats) = Some(stats);
    }

    /// READY->PAUSED: when upstream already says the frame size (a capsfilter before a live
    /// camera), warm the model up on it now (the state change waits for it, at most
    /// [`WARM_UP_WAIT`]), so that the first frame in PLAYING does not pay for the first run
    /// (allocations, thread start-up, `precision=auto`'s timing) and the latency reported for
    /// it holds. The caps event warms up again only if the negotiated format differs.
    fn warm_up_from_upstream(&self) {
        let Some(sender) = self.sender() else {
            return;
        };
        let template = self.sinkpad.pad_template_caps();
        let caps = self.sinkpad.peer_query_caps(Some(&template));
        let sized = caps
            .structure(0)
            .is_some_and(|s| s.get::<i32>("width").is_ok() && s.get::<i32>("height").is_ok());
        if !sized {
            gst::debug!(
                CAT,
                imp = self,
                "No warm-up before caps: upstream has no fixed size"
            );
            return;
        }
        let mut fixed = caps.clone();
        fixed.fixate();
        let info = gst_video::VideoInfo::from_caps(&fixed).ok();
        if let Some(info) = &info {
            // The latency query of a live pipeline comes before its caps.
            lock(&self.sink_state).frame_interval = live::frame_interval(info);
        }
        let format = info.and_then(|info| frame_format(&info));
        match format.map(|f| (f, sender.warm_up(f))) {
            Some((f, Ok(warming))) => {
                gst::debug!(CAT, imp = self, "Warming up on {:?}", f);
                // Over before PAUSED: a live source starts after this element (a bin changes
                // its sinks first), so its first frames do not arrive while the model warms
                // up (they would have to be thinned: they could only leave late).
                if !warming.wait(WARM_UP_WAIT) {
                    gst::warning!(
                        CAT,
                        imp = self,
                        "Warm-up still running after {:?}",
                        WARM_UP_WAIT
                    );
                }
            }
            Some((_, Err(e))) => gst::debug!(CAT, imp = self, "No warm-up: {}", e),
            None => gst::debug!(CAT, imp = self, "No warm-up: upstream caps {:?}", caps),
        }
    }

    /// A new engine when model-shaping properties changed in READY.
    fn restart_engine_if_changed(&self) -> Result<(), gst::ErrorMessage> {
        let key = lock(&self.settings).engine_key();
        let changed = lock(&self.state).as_ref().is_none_or(|s| s.key != key);
        if changed {
            gst::debug!(CAT, imp = self, "Settings changed in READY: new engine");
            self.stop_engine();
            self.start_engine()?;
        }
        Ok(())
    }

    fn reset_stream(&self) {
        *lock(&self.sink_state) = SinkState::default();
        *lock(&self.src_state) = SrcState::default();
        *lock(&self.qos) = Qos::default();
        self.eos.reset();
    }

    fn stats_structure(&self) -> gst::Structure {
        let info = self.control().map(|c| c.info().clone());
        let stats = self
            .control()
            .map(|c| c.stats())
            .or_else(|| lock(&self.last_stats).clone())
            .unwrap_or_default();
        let sharing = info.as_ref().and_then(|i| i.sharing.as_ref());
        let element = stats::ElementCounts {
            passed_through: self.passed_through.load(Ordering::Relaxed),
            thinned: self.thinned.load(Ordering::Relaxed),
            batch_size: info.as_ref().map_or(0, |i| i.batch_size as u64),
            max_pixels: info.as_ref().map_or(0, |i| i.max_pixels.max(0) as u64),
            model_id: sharing.map_or(0, |s| s.id),
            model_streams: match (&info, sharing) {
                (_, Some(s)) => s.streams() as u64,
                (Some(_), None) => 1,
                (None, None) => 0,
            },
            latency_ms: self.own_latency().nseconds() as f64 / 1e6,
        };
        stats::structure(&stats, &element)
    }

    /// The batch size, batching wait, batch time estimate and frame interval of the running
    /// engine ([`live`]); None when no engine runs.
    fn pace(&self) -> Option<Pace> {
        let frame_interval = lock(&self.sink_state).frame_interval;
        let state = lock(&self.state);
        let state = state.as_ref()?;
        let control = state.sender.control();
        Some(Pace {
            batch_size: state.batch_size,
            max_latency: Duration::from_nanos(state.max_latency.nseconds()),
            batch_time: control.batch_time_estimate(state.batch_size),
            batch_jitter: control.batch_time_jitter(state.batch_size),
            frame_interval,
            other_streams: control.other_streams(),
        })
    }

    /// What a frame may spend in this element ([`Pace::latency`]): the batching wait, its own
    /// batch and at most one frame interval of queueing. Live streams are thinned to keep to
    /// it.
    fn own_latency(&self) -> gst::ClockTime {
        self.pace().map_or(gst::ClockTime::ZERO, |p| {
            gst::ClockTime::from_nseconds(p.latency().as_nanos() as u64)
        }) + self.lookahead_latency()
    }

    /// Offline mode: the `lookahead` frame intervals each frame waits for its later frames
    /// (0 before caps or without a frame rate).
    fn lookahead_latency(&self) -> gst::ClockTime {
        let frames = lock(&self.state).as_ref().map_or(0, |s| s.lookahead);
        let interval = lock(&self.sink_state).frame_interval.unwrap_or_default();
        gst::ClockTime::from_nseconds((interval * frames).as_nanos() as u64)
    }

    /// Live input while the model is behind: a frame that would wait for the model longer
    /// than the latency allows is dropped here instead (the input is thinned to the rate the
    /// device sustains; [`Pace::must_thin`]).
    fn must_thin(&self, sender: &EngineSender<Item>) -> bool {
        if !self.live.load(Ordering::Relaxed) {
            return false;
        }
        self.pace()
            .is_some_and(|p| p.must_thin(sender.control().wait_estimate(p.batch_size)))
    }

    /// Ask upstream whether it is live (when caps arrive, in a pipeline). The pipeline's
    /// LATENCY query says it too, but a live pipeline only asks once its sink has its first
    /// frame: the frames before it would not be thinned and would pile up in front of the
    /// model. An element on its own (a GstHarness, whose upstream always answers live but
    /// pushes as fast as it likes) learns it from a LATENCY query only, as before.
    fn query_upstream_live(&self) {
        let mut q = gst::query::Latency::new();
        if self.sinkpad.peer_query(&mut q) {
            self.live.store(q.result().0, Ordering::Relaxed);
        }
    }

    /// Post a LATENCY message when the measured batch time moved the latency away from what
    /// was last reported, so that live pipelines reconfigure: at once (at most every 100 ms)
    /// when it grew, since frames are late until then; once a second at most when it fell by
    /// a quarter.
    fn check_latency(&self) {
        let ours = self.own_latency();
        let post = {
            let mut s = lock(&self.src_state);
            let since = |d: u64| {
                s.latency_posted
                    .is_none_or(|t| t.elapsed() >= Duration::from_millis(d))
            };
            let (grew_ok, fell_ok) = (since(100), since(1000));
            match s.reported_latency {
                Some(r)
                    if (grew_ok && ours > r + gst::ClockTime::from_mseconds(2))
                        || (fell_ok && ours < r - r / 4) =>
                {
                    s.reported_latency = Some(ours);
                    s.latency_posted = Some(std::time::Instant::now());
                    true
                }
                _ => false,
            }
        };
        if post {
            gst::debug!(CAT, imp = self, "Latency changed to {}", ours);
            let _ = self
                .obj()
                .post_message(gst::message::Latency::builder().src(&*self.obj()).build());
        }
    }

    fn update_qos(&self, proportion: f64, diff: i64, timestamp: Option<gst::ClockTime>) {
        let frame = lock(&self.sink_state)
            .info
            .as_ref()
            .and_then(live::frame_interval)
            .map_or(gst::ClockTime::ZERO, |d| {
                gst::ClockTime::from_nseconds(d.as_nanos() as u64)
            });
        let mut q = lock(&self.qos);
        q.proportion = proportion;
        q.earliest = timestamp.map(|ts| {
            if diff > 0 {
                ts + gst::ClockTime::from_nseconds(2 * diff as u64) + frame
            } else {
                ts.saturating_sub(gst::ClockTime::from_nseconds(diff.unsigned_abs()))
            }
        });
    }

    /// QoS: whether downstream already reported frames this late as too late.
    fn is_late(
        &self,
        buffer: &gst::BufferRef,
        segment: &gst::FormattedSegment<gst::ClockTime>,
    ) -> bool {
        if !lock(&self.settings).qos {
            return false;
        }
        let running_time = segment.to_running_time(buffer.pts());
        let mut q = lock(&self.qos);
        let late = match (running_time, q.earliest) {
            (Some(rt), Some(earliest)) => rt <= earliest,
            _ => false,
        };
        if !late {
            q.processed += 1;
            return false;
        }
        q.dropped += 1;
        let (processed, dropped, proportion, earliest) =
            (q.processed, q.dropped, q.proportion, q.earliest);
        drop(q);
        let jitter = match (running_time, earliest) {
            (Some(rt), Some(e)) => rt.nseconds() as i64 - e.nseconds() as i64,
            _ => 0,
        };
        gst::debug!(
            CAT,
            imp = self,
            "Dropping late frame {:?} (running time {:?}, earliest {:?})",
            buffer.pts(),
            running_time,
            earliest
        );
        let msg = gst::message::Qos::builder(false)
            .running_time(running_time)
            .stream_time(segment.to_stream_time(buffer.pts()))
            .timestamp(buffer.pts())
            .duration(buffer.duration())
            .values(jitter, proportion, 1_000_000)
            .stats(
                gst::format::Buffers::from_u64(processed),
                gst::format::Buffers::from_u64(dropped),
            )
            .src(&*self.obj())
            .build();
        let _ = self.obj().post_message(msg);
        true
    }

    fn sink_chain(
        &self,
        _pad: &gst::Pad,
        buffer: gst::Buffer,
    ) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.flow()?;
        let Some(sender) = self.sender() else {
            return Err(gst::FlowError::Flushing);
        };
        let (info, format, segment) = {
            let s = lock(&self.sink_state);
            (s.info.clone(), s.format, s.segment.clone())
        };
        let (Some(info), Some(format)) = (info, format) else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("Received a buffer before caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        if let Some(t) = segment.to_stream_time(buffer.pts()) {
            // Control sources bound to `strength` (GstController) set it for this frame.
            let _ = self.obj().sync_values(t);
        }
        if buffer.flags().contains(gst::BufferFlags::DISCONT) {
            // Frames were lost before this one: no fusing across the break, even when this
            // one is passed through or dropped below (late, thinned).
            self.sent(sender.reset_temporal())?;
        }
        if self.strength.get() <= 0.0 {
            // Exact and free: the buffer itself, in order behind the frames in flight.
            self.passed_through.fetch_add(1, Ordering::Relaxed);
            return self.sent(sender.marker(Item::Passthrough(buffer)));
        }
        if buffer.flags().contains(gst::BufferFlags::DECODE_ONLY) {
            // Not to be shown (a job segment's warm-up, the frames its lookahead reads past
            // its end): only the next frames' temporal stage needs it. No network; it goes
            // downstream as it came, in order, with its flag (never late: no QoS drop).
            let data = self.pack_frame(&buffer, &info, &format)?;
            return self.sent(sender.send_decode_only(data, format, Item::Passthrough(buffer)));
        }
        if self.is_late(&buffer, &segment) {
            sender.record_dropped(1);
            return self.flow();
        }
        if self.must_thin(&sender) {
            gst::log!(CAT, imp = self, "Thinning: dropping {:?}", buffer.pts());
            self.thinned.fetch_add(1, Ordering::Relaxed);
            sender.record_dropped(1);
            return self.flow();
        }
        let data = self.pack_frame(&buffer, &info, &format)?;
        let meta = metadata_only(&buffer).map_err(|e| {
            gst::element_imp_error!(self, gst::CoreError::Failed, ("{}", e));
            gst::FlowError::Error
        })?;
        drop(buffer);
        self.sent(sender.send(data, format, Item::Buffer(meta)))
    }

    /// `buffer`'s frame packed for the engine (an element error when it cannot be read).
    fn pack_frame(
        &self,
        buffer: &gst::Buffer,
        info: &gst_video::VideoInfo,
        format: &FrameFormat,
    ) -> Result<Vec<u8>, gst::FlowError> {
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer.as_ref(), info)
            .map_err(|_| {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Format,
                    (
                        "Could not map a {}x{} {} frame",
                        info.width(),
                        info.height(),
                        info.format()
                    )
                );
                gst::FlowError::Error
            })?;
        pack(&frame, format).map_err(|e| {
            gst::element_imp_error!(self, gst::StreamError::Format, ("Bad frame: {}", e));
            gst::FlowError::Error
        })
    }

    /// The chain function's result after handing the engine a frame.
    fn sent(&self, res: Result<(), SendError>) -> Result<gst::FlowSuccess, gst::FlowError> {
        match res {
            Ok(()) => self.flow(),
            Err(SendError::Flushing) => match self.flow() {
                Ok(_) => Err(gst::FlowError::Flushing),
                err => err,
            },
            Err(SendError::Stopped) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("The model worker stopped")
                );
                Err(gst::FlowError::Error)
            }
            Err(SendError::Invalid(e)) => {
                gst::element_imp_error!(self, gst::StreamError::Format, ("{}", e));
                Err(gst::FlowError::Error)
            }
        }
    }

    /// Send a serialized event through the engine, in order with the frames.
    fn queue_event(&self, event: gst::Event, drain: bool) -> bool {
        let Some(sender) = self.sender() else {
            return false;
        };
        let res = if drain {
            sender.drain(Item::Event(event))
        } else {
            sender.marker(Item::Event(event))
        };
        match res {
            Ok(()) => true,
            Err(SendError::Flushing) => false,
            Err(e) => {
                gst::element_imp_error!(self, gst::LibraryError::Failed, ("{}", e));
                false
            }
        }
    }

    /// Block until every frame queued so far was pushed downstream (false on a flush).
    fn drain_and_wait(&self) -> bool {
        let Some(sender) = self.sender() else {
            return false;
        };
        let (tx, rx) = mpsc::sync_channel(1);
        if sender.drain(Item::Barrier(tx)).is_err() {
            return false;
        }
        rx.recv().is_ok()
    }

    fn flush_start(&self) {
        self.set_flow(Err(gst::FlowError::Flushing));
        if let Some(c) = self.control() {
            c.flush_start();
        }
    }

    fn flush_stop(&self) {
        if let Some(c) = self.control() {
            c.flush_stop();
        }
        let mut q = lock(&self.qos);
        q.earliest = None;
        drop(q);
        self.eos.reset();
        self.set_flow(Ok(gst::FlowSuccess::Ok));
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        gst::log!(CAT, obj = pad, "Handling event {:?}", event);
        match event.view() {
            EventView::FlushStart(_) => {
                // Unblock the chain function and the src task, then wait for the task.
                self.flush_start();
                let ret = self.srcpad.push_event(event);
                if let Err(e) = self.srcpad.pause_task() {
                    gst::warning!(CAT, imp = self, "Could not pause the task: {}", e);
                }
                ret
            }
            EventView::FlushStop(_) => {
                self.flush_stop();
                let ret = self.srcpad.push_event(event);
                if let Err(e) = self.start_task() {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Failed,
                        ("Could not restart the task: {}", e)
                    );
                    return false;
                }
                ret
            }
            EventView::Caps(c) => {
                let info = match gst_video::VideoInfo::from_caps(c.caps()) {
                    Ok(info) => info,
                    Err(_) => {
                        gst::warning!(CAT, imp = self, "Invalid caps {:?}", c.caps());
                        return false;
                    }
                };
                let Some(format) = frame_format(&info) else {
                    gst::warning!(CAT, imp = self, "Unsupported caps {:?}", c.caps());
                    return false;
                };
                gst::debug!(CAT, imp = self, "New format {:?}", format);
                {
                    let mut s = lock(&self.sink_state);
                    s.frame_interval = live::frame_interval(&info);
                    s.info = Some(info);
                    s.format = Some(format);
                }
                if self.obj().parent().is_some() {
                    self.query_upstream_live();
                }
                // Everything of the old format goes out first, then the new caps; the model
                // warms up on a frame of the new size meanwhile (before the first frame: in
                // PAUSED for a non-live source).
                let queued = self.queue_event(event, true);
                if let Some(sender) = self.sender().filter(|_| queued) {
                    if let Err(e) = sender.warm_up(format) {
                        gst::debug!(CAT, imp = self, "No warm-up: {}", e);
                    }
                }
                queued
            }
            EventView::Segment(s) => {
                if let Ok(segment) = s.segment().clone().downcast::<gst::ClockTime>() {
                    lock(&self.sink_state).segment = segment;
                }
                self.queue_event(event, false)
            }
            EventView::Eos(_) => self.sink_eos(event),
            EventView::Gap(_) => {
                // No frames for a while: the next one is not fused with those before it.
                let reset = self.sender().is_some_and(|s| s.reset_temporal().is_ok());
                reset && self.queue_event(event, false)
            }
            _ if event.is_serialized() => self.queue_event(event, false),
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// EOS goes through the engine behind the frames, unless the task stopped on a downstream
    /// flow (then the engine refuses it): then it goes downstream at once.
    fn sink_eos(&self, event: gst::Event) -> bool {
        if self.eos.on_received() {
            return self.forward_eos(event);
        }
        if self.queue_event(event.clone(), true) {
            return true;
        }
        // Refused: the task stopped meanwhile (it forwards EOS itself if it saw ours first).
        self.eos.is_stopped() && self.forward_eos(event)
    }

    /// Push EOS downstream unless it was already pushed.
    fn forward_eos(&self, event: gst::Event) -> bool {
        if self.eos.take_forward() {
            gst::debug!(CAT, imp = self, "Forwarding EOS after the task stopped");
            self.srcpad.push_event(event);
        }
        true
    }

    fn sink_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Drain(_) => self.drain_and_wait(),
            gst::QueryViewMut::Allocation(q) => {
                // Output buffers are this element's own; upstream allocates as it likes.
                q.add_allocation_meta::<gst_video::VideoMeta>(None);
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn sink_activatemode(
        &self,
        _pad: &gst::Pad,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "Only push mode is supported"));
        }
        if !active {
            // Unblock a chain function waiting on a full queue.
            self.flush_start();
        }
        Ok(())
    }

    fn src_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        gst::log!(CAT, obj = pad, "Handling event {:?}", event);
        if let gst::EventView::Qos(q) = event.view() {
            let (_, proportion, diff, timestamp) = q.get();
            self.update_qos(proportion, diff, timestamp);
        }
        gst::Pad::event_default(pad, Some(&*self.obj()), event)
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        match query.view_mut() {
            gst::QueryViewMut::Latency(q) => {
                let mut peer = gst::query::Latency::new();
                if !self.sinkpad.peer_query(&mut peer) {
                    return false;
                }
                let (live, min, max) = peer.result();
                let ours = self.own_latency();
                gst::debug!(
                    CAT,
                    imp = self,
                    "Upstream latency {} - {:?}, ours {}",
                    min,
                    max,
                    ours
                );
                lock(&self.src_state).reported_latency = Some(ours);
                self.live.store(live, Ordering::Relaxed);
                q.set(live, min + ours, max.map(|m| m + ours));
                true
            }
            _ => gst::Pad::query_default(pad, Some(&*self.obj()), query),
        }
    }

    fn src_activatemode(
        &self,
        pad: &gst::Pad,
        mode: gst::PadMode,
        active: bool,
    ) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "Only push mode is supported"));
        }
        if active {
            self.flush_stop();
            self.start_task()
                .map_err(|e| gst::loggable_error!(CAT, "Could not start the task: {}", e))?;
        } else {
            self.flush_start();
            pad.stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "Could not stop the task: {}", e))?;
        }
        Ok(())
    }

    fn start_task(&self) -> Result<(), glib::BoolError> {
        let element = self.obj().downgrade();
        let pad = self.srcpad.downgrade();
        self.srcpad.start_task(move || match element.upgrade() {
            Some(element) => element.imp().src_loop(),
            None => {
                if let Some(pad) = pad.upgrade() {
                    let _ = pad.pause_task();
                }
            }
        })
    }

    /// One iteration of the src pad task: the next output, pushed downstream.
    fn src_loop(&self) {
        let Some(receiver) = self.receiver() else {
            self.stop_streaming(gst::FlowError::Flushing, false);
            return;
        };
        let res = match receiver.recv() {
            Ok(Output::Frame(frame)) => self.push_frame(frame),
            Ok(Output::Marker(item)) => self.push_item(item),
            Ok(Output::Failed { error, payloads }) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    (
                        "The model failed on a batch of {} frames: {}",
                        payloads.len(),
                        error
                    )
                );
                self.stop_streaming(gst::FlowError::Error, false);
                return;
            }
            Err(RecvError::Flushing) => Err(gst::FlowError::Flushing),
            Err(RecvError::Timeout) => Ok(gst::FlowSuccess::Ok),
            Err(RecvError::Disconnected) => {
                gst::element_imp_error!(
                    self,
                    gst::LibraryError::Failed,
                    ("The model worker stopped")
                );
                self.stop_streaming(gst::FlowError::Error, false);
                return;
            }
        };
        if let Err(err) = res {
            self.stop_streaming(err, true);
        }
    }

    /// Pause the task after `err`; unless flushing, remember it for the chain function (which
    /// returns it upstream), unblock upstream and drop what is queued. Fatal errors post an
    /// ERROR (when `post`) and send EOS downstream; on EOS from downstream, the EOS upstream
    /// sends in answer (or already sent) is forwarded (see [`EosGate`]).
    fn stop_streaming(&self, err: gst::FlowError, post: bool) {
        gst::debug!(CAT, imp = self, "Pausing the task: {:?}", err);
        if err != gst::FlowError::Flushing {
            self.set_flow(Err(err));
            if let Some(c) = self.control() {
                c.flush_start();
            }
            let eos_received = self.eos.on_stopped();
            let fatal = err != gst::FlowError::Eos;
            if fatal && post {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("Internal data stream error."),
                    ["streaming stopped, reason {:?}", err]
                );
            }
            if (fatal || eos_received) && self.eos.take_forward() {
                self.srcpad.push_event(gst::event::Eos::new());
            }
        }
        if let Err(e) = self.srcpad.pause_task() {
            // The pad is being deactivated, which stops the task anyway.
            gst::debug!(CAT, imp = self, "Could not pause the task: {}", e);
        }
    }

    /// Log at INFO what the model runs in, once per choice (`auto` chooses on the worker).
    fn log_precision(&self) {
        let Some(choice) = self.control().and_then(|c| c.stats().precision_choice) else {
            return;
        };
        let mut logged = lock(&self.logged_precision);
        if logged.as_ref() != Some(&choice) {
            gst::info!(CAT, imp = self, "Precision {}", choice);
            *logged = Some(choice);
        }
    }

    fn push_frame(&self, frame: DenoisedFrame<Item>) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.log_precision();
        let DenoisedFrame {
            payload,
            data,
            format,
            timing,
        } = frame;
        let meta = match payload {
            Item::Buffer(meta) => meta,
            // A decode-only frame: the buffer as it came.
            Item::Passthrough(buffer) => return self.srcpad.push(buffer),
            _ => return Ok(gst::FlowSuccess::Ok),
        };
        let Some(info) = lock(&self.src_state).info.clone() else {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                ("A frame came out before caps")
            );
            return Err(gst::FlowError::NotNegotiated);
        };
        if info.width() as usize != format.width || info.height() as usize != format.height {
            gst::element_imp_error!(
                self,
                gst::CoreError::Negotiation,
                (
                    "A {}x{} frame under {}x{} caps",
                    format.width,
                    format.height,
                    info.width(),
                    info.height()
                )
            );
            return Err(gst::FlowError::NotNegotiated);
        }
        let mut out = meta;
        {
            let b = out.make_mut();
            b.append_memory(gst::Memory::with_size(info.size()));
            let mut vframe =
                gst_video::VideoFrameRef::from_buffer_ref_writable(b, &info).map_err(|_| {
                    gst::element_imp_error!(
                        self,
                        gst::CoreError::Failed,
                        ("Could not map an output frame")
                    );
                    gst::FlowError::Error
                })?;
            unpack(&data, &format, &mut vframe).map_err(|e| {
                gst::element_imp_error!(self, gst::CoreError::Failed, ("{}", e));
                gst::FlowError::Error
            })?;
        }
        gst::trace!(
            CAT,
            imp = self,
            "Pushing {:?}: queued {:?}, batch of {}, model {:?}",
            out.pts(),
            timing.queue_wait,
            timing.batch_frames,
            timing.stages.model
        );
        self.check_latency();
        self.srcpad.push(out)
    }

    fn push_item(&self, item: Item) -> Result<gst::FlowSuccess, gst::FlowError> {
        match item {
            Item::Event(event) => {
                let caps = match event.view() {
                    gst::EventView::Caps(c) => Some(c.caps_owned()),
                    _ => None,
                };
                if let Some(caps) = &caps {
                    let info = gst_video::VideoInfo::from_caps(caps).ok();
                    lock(&self.src_state).info = info;
                }
                if event.type_() == gst::EventType::Eos && !self.eos.take_forward() {
                    return Ok(gst::FlowSuccess::Ok);
                }
                if !self.srcpad.push_event(event) && caps.is_some() {
                    if self.srcpad.pad_flags().contains(gst::PadFlags::FLUSHING) {
                        return Err(gst::FlowError::Flushing);
                    }
                    return Err(gst::FlowError::NotNegotiated);
                }
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Barrier(done) => {
                let _ = done.send(());
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Passthrough(buffer) => self.srcpad.push(buffer),
            Item::Buffer(_) => Ok(gst::FlowSuccess::Ok),
        }
    }
}

#[glib::object_subclass]
impl ObjectSubclass for ClipDenoise {
    const NAME: &'static str = "GstClipDenoise";
    type Type = super::ClipDenoise;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let templ = klass
            .pad_template("sink")
            .expect("the class has a sink pad template");
        let sinkpad = gst::Pad::builder_from_template(&templ)
            .chain_function(|pad, parent, buffer| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(pad, buffer),
                )
            })
            .event_function(|pad, parent, event| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_query(pad, query),
                )
            })
            .activatemode_function(|pad, parent, mode, active| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "Panic activating the sink pad")),
                    |imp| imp.sink_activatemode(pad, mode, active),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();

        let templ = klass
            .pad_template("src")
            .expect("the class has a src pad template");
        let srcpad = gst::Pad::builder_from_template(&templ)
            .event_function(|pad, parent, event| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_event(pad, event),
                )
            })
            .query_function(|pad, parent, query| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .activatemode_function(|pad, parent, mode, active| {
                ClipDenoise::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "Panic activating the src pad")),
                    |imp| imp.src_activatemode(pad, mode, active),
                )
            })
            .flags(gst::PadFlags::PROXY_CAPS)
            .build();

        ClipDenoise {
            sinkpad,
            srcpad,
            settings: Mutex::new(Settings::default()),
            strength: Strength::new(DEFAULT_STRENGTH),
            temporal: Strength::new(DEFAULT_TEMPORAL),
            state: Mutex::new(None),
            sink_state: Mutex::new(SinkState::default()),
            src_state: Mutex::new(SrcState::default()),
            flow: Mutex::new(Err(gst::FlowError::Flushing)),
            qos: Mutex::new(Qos::default()),
            last_stats: Mutex::new(None),
            eos: EosGate::default(),
            passed_through: AtomicU64::new(0),
            thinned: AtomicU64::new(0),
            live: AtomicBool::new(false),
            logged_precision: Mutex::new(None),
        }
    }
}

impl ObjectImpl for ClipDenoise {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("model")
                    .nick("Model")
                    .blurb("Weights file (safetensors), a model name found in $CLIPDENOISE_MODEL_DIR or the cache directory (as `clipdenoise info` lists them), or \"default\" (or empty) for the built-in default model")
                    .default_value(Some(DEFAULT_MODEL))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("device")
                    .nick("Device")
                    .blurb("Where the model runs: auto (CUDA if available, else the CPU), cpu, cuda or cuda:N (gpu: an alias of cuda, the first CUDA device); anything else is refused with a warning and the old value stays")
                    .default_value(Some(DEFAULT_DEVICE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("batch-size")
                    .nick("Batch size")
                    .blurb("Most frames per model call (0: auto, 1 on the CPU, 4 on a GPU; `stats` says which)")
                    .minimum(0)
                    .maximum(256)
                    .default_value(DEFAULT_BATCH_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("max-latency")
                    .nick("Maximum latency")
                    .blurb("Longest wait, in ms, of the oldest frame of a partial batch before the batch runs anyway")
                    .maximum(60_000)
                    .default_value(DEFAULT_MAX_LATENCY_MS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt::builder("queue-size")
                    .nick("Queue size")
                    .blurb("Frames queued for the model before upstream blocks")
                    .minimum(1)
                    .maximum(1024)
                    .default_value(DEFAULT_QUEUE_SIZE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("precision", DEFAULT_PRECISION)
                    .nick("Precision")
                    .blurb("Arithmetic of the model (fp16 needs CUDA)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecUInt64::builder("max-pixels")
                    .nick("Maximum pixels")
                    .blurb("Frames with more pixels run as overlapping tiles of about this size (0: auto, a budget that bounds the model's memory: about 2 GB for a 4K frame on the CPU; `stats` says which). Above a frame's pixels: whole frames")
                    .maximum(i64::MAX as u64)
                    .default_value(DEFAULT_MAX_PIXELS)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecDouble::builder("strength")
                    .nick("Strength")
                    .blurb("Blend of input (0: the input buffers untouched, the model idle) and denoised output (1); controllable (GstController), applied per batch")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_STRENGTH)
                    .mutable_playing()
                    .controllable()
                    .build(),
                glib::ParamSpecDouble::builder("temporal")
                    .nick("Temporal denoising")
                    .blurb("Average each frame's input with the motion-aligned earlier frames (and later ones with lookahead) where they match, before the network (0: off, frames denoised independently; 0.5: up to 2.4 frames; 1: up to 3.8). Moving, occluded pixels and scene cuts keep the frame's own")
                    .minimum(0.0)
                    .maximum(1.0)
                    .default_value(DEFAULT_TEMPORAL)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("lookahead")
                    .nick("Lookahead")
                    .blurb("Offline mode: each frame waits for this many later frames, which the temporal filter also uses (a backward recursion next to the forward one); adds that many frame durations to the latency. 0 (the default, live sources): causal, no added latency")
                    .maximum(MAX_LOOKAHEAD)
                    .default_value(DEFAULT_LOOKAHEAD)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecInt64::builder("temporal-origin")
                    .nick("Temporal origin")
                    .blurb("The index of the stream's first frame for the temporal filter: its forward recursion then restarts every 16 frames of the stream (two staggered recursions, twice the motion searches), so that a segment of a video denoised on its own (clipdenoise segment sets its first frame's index) equals one pass (0). -1 (the default, live streams): one recursion, never restarted")
                    .minimum(-1)
                    .default_value(-1)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("qos")
                    .nick("QoS")
                    .blurb("Drop frames that downstream reported as too late (live pipelines)")
                    .default_value(DEFAULT_QOS)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecBoolean::builder("coarse-grain")
                    .nick("Coarse grain")
                    .blurb("Also remove coarse grain (low light, phones): a first pass of the model on the frame's four pixel-shuffled half-size sub-images, then the usual one. Twice the compute; on fine-grained noise it loses detail")
                    .default_value(DEFAULT_COARSE_GRAIN)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("refine")
                    .nick("Refine")
                    .blurb("After the network: off, or wiener: an empirical Wiener filter of the input frame with the network's output as pilot (BM3D's second stage: it keeps the input's brightness and colour and can only shrink its detail), parameters as wiener:block=8,stride=2,colour=opponent,sigma=psd,scale=1,levels=1,dc=wiener,adapt=LO:HI (adapt: each frame gets the filter in proportion to its estimated noise, none at or below LO, all at or above HI, levels of 255); adaptive: wiener:sigma=flat,scale=2,dc=input,adapt=3:5; or collab: the same filter on groups of similar blocks found on the network's output (BM3D's block matching, on the CPU), parameters as collab:sigma=flat,scale=1,search=12,group=32,step=3,dc=wiener,adapt=LO:HI; strong (real camera noise): collab:scale=3,search=16,adapt=3:5; anything else is refused with a warning and the old value stays")
                    .default_value(Some(DEFAULT_REFINE))
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("share-model")
                    .nick("Share the model")
                    .blurb("Run on the one model of this process that other clipdenoise elements with the same model, device, precision, batch-size, max-pixels use (loaded once; frames of several streams may share a model call; each stream keeps its own order, flushes and EOS; `stats` says how many streams share it). false: this element loads its own")
                    .default_value(DEFAULT_SHARE_MODEL)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoxed::builder::<gst::Structure>("stats")
                    .nick("Statistics")
                    .blurb(stats::BLURB)
                    .read_only()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let name = pspec.name();
        match name {
            "strength" => {
                let v: f64 = value.get().expect("type checked upstream");
                self.strength.set(v);
                lock(&self.settings).strength = v;
                return;
            }
            "temporal" => {
                let v: f64 = value.get().expect("type checked upstream");
                self.temporal.set(v);
                lock(&self.settings).temporal = v;
                return;
            }
            "qos" => {
                lock(&self.settings).qos = value.get().expect("type checked upstream");
                return;
            }
            _ => {}
        }
        let checked = match name {
            "device" => props::device(value),
            "refine" => props::refine(value),
            _ => Ok(String::new()),
        };
        let checked = match checked {
            Ok(v) => v,
            Err(e) => {
                glib::g_warning!("clipdenoise", "{}: {}", self.obj().name(), e);
                return;
            }
        };
        let state = self.obj().current_state();
        if state > gst::State::Ready {
            glib::g_warning!(
                "clipdenoise",
                "{}: property '{}' set in {:?}: it takes effect on the next start (READY to PAUSED)",
                self.obj().name(),
                name,
                state
            );
        }
        let mut s = lock(&self.settings);
        match name {
            "model" => s.model = props::model(value),
            "device" => s.device = checked,
            "refine" => s.refine = checked,
            "batch-size" => s.batch_size = value.get().expect("type checked upstream"),
            "max-latency" => s.max_latency_ms = value.get().expect("type checked upstream"),
            "queue-size" => s.queue_size = value.get().expect("type checked upstream"),
            "precision" => s.precision = value.get().expect("type checked upstream"),
            "max-pixels" => s.max_pixels = value.get().expect("type checked upstream"),
            "share-model" => s.share_model = value.get().expect("type checked upstream"),
            "coarse-grain" => s.coarse_grain = value.get().expect("type checked upstream"),
            "lookahead" => s.lookahead = value.get().expect("type checked upstream"),
            "temporal-origin" => s.temporal_origin = value.get().expect("type checked upstream"),
            _ => unimplemented!("property {name}"),
        }
        gst::debug!(CAT, imp = self, "{} set", name);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = lock(&self.settings);
        match pspec.name() {
            "model" => s.model.to_value(),
            "device" => s.device.to_value(),
            "batch-size" => s.batch_size.to_value(),
            "max-latency" => s.max_latency_ms.to_value(),
            "queue-size" => s.queue_size.to_value(),
            "precision" => s.precision.to_value(),
            "max-pixels" => s.max_pixels.to_value(),
            "strength" => s.strength.to_value(),
            "temporal" => s.temporal.to_value(),
            "lookahead" => s.lookahead.to_value(),
            "temporal-origin" => s.temporal_origin.to_value(),
            "qos" => s.qos.to_value(),
            "share-model" => s.share_model.to_value(),
            "coarse-grain" => s.coarse_grain.to_value(),
            "refine" => s.refine.to_value(),
            "stats" => {
                drop(s);
                self.stats_structure().to_value()
            }
            name => unimplemented!("property {name}"),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).expect("adding the sink pad");
        obj.add_pad(&self.srcpad).expect("adding the src pad");
    }
}

impl GstObjectImpl for ClipDenoise {}

impl ElementImpl for ClipDenoise {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static ELEMENT_METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::with_additional(
                "CLIPDenoising video denoiser",
                "Filter/Effect/Video",
                "Denoises video with the CLIPDenoising network (CVPR 2024), in batches on the CPU or CUDA",
                "clipdenoise developers",
                &[("doc-uri", DOC_URI)],
            )
        });
        Some(&*ELEMENT_METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static PAD_TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            use gst_video::VideoFormat as V;
            let caps = gst_video::VideoCapsBuilder::new()
                .format_list([
                    V::Rgb,
                    V::Rgbx,
                    V::Bgrx,
                    V::Rgba,
                    V::Bgra,
                    V::Bgr,
                    V::I420,
                    V::Y444,
                    V::Nv12,
                    V::Yuy2,
                    V::Uyvy,
                    V::I42010le,
                    V::P01010le,
                    V::Rgba64Le,
                    V::Bgra64Le,
                    V::Rgb10a2Le,
                    V::Bgr10a2Le,
                ])
                .build();
            vec![
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid src pad template"),
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &caps,
                )
                .expect("valid sink pad template"),
            ]
        });
        PAD_TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        gst::trace!(CAT, imp = self, "Changing state {:?}", transition);
        match transition {
            gst::StateChange::NullToReady => {
                if let Err(e) = self.start_engine() {
                    self.post_error_message(e);
                    return Err(gst::StateChangeError);
                }
            }
            gst::StateChange::ReadyToPaused => {
                if let Err(e) = self.restart_engine_if_changed() {
                    self.post_error_message(e);
                    return Err(gst::StateChangeError);
                }
                self.reset_stream();
                self.warm_up_from_upstream();
            }
            _ => {}
        }
        let ret = self.parent_change_state(transition)?;
        match transition {
            gst::StateChange::PausedToReady => self.reset_stream(),
            gst::StateChange::ReadyToNull => self.stop_engine(),
            _ => {}
        }
        Ok(ret)
    }
}
