//! The element with a model that fails mid-stream: the error reaches the bus and nothing
//! deadlocks; and the live thinning policy on a model whose speed the test sets. Unit tests,
//! so that these models stay out of the element's public interface: under `cfg(test)` the
//! element named [`FAULTY`] runs the real model wrapped in [`FailAfter`], an element named
//! `paced-<ms>` ([`PACED`]) the model [`Paced`], which takes `<ms>` per frame.

use std::cell::Cell;
use std::path::Path;
use std::sync::Once;
use std::time::{Duration, Instant};

use gst::prelude::*;

use clipdenoise::engine::{self, EngineConfig, EngineReceiver, EngineSender, FrameModel};
use clipdenoise::frame::FrameFormat;
use clipdenoise::inference::{Denoiser, Options, Precision, StageTimes};
use clipdenoise::weights::{ModelSource, Provenance};
use clipdenoise::{Config, Error, Result};

/// The element named like this fails every batch after [`FAULTY_AFTER`] frames.
const FAULTY: &str = "faulty";
const FAULTY_AFTER: u64 = 6;

/// A model that fails every batch once `after` frames went through it.
struct FailAfter<M> {
    model: M,
    after: u64,
    frames_run: Cell<u64>,
}

impl<M: FrameModel> FrameModel for FailAfter<M> {
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        let done = self
            .frames_run
            .replace(self.frames_run.get() + frames.len() as u64);
        if done >= self.after {
            return Err(Error::Torch("injected failure (test model)".into()));
        }
        self.model.denoise_batch(frames, format, strength)
    }
    fn config(&self) -> &Config {
        self.model.config()
    }
    fn provenance(&self) -> &Provenance {
        self.model.provenance()
    }
    fn device(&self) -> tch::Device {
        self.model.device()
    }
    fn precision(&self) -> Precision {
        self.model.precision()
    }
    fn set_interrupt(&mut self, interrupt: clipdenoise::inference::Interrupt) {
        self.model.set_interrupt(interrupt)
    }
}

/// Elements named `paced-<ms>` run [`Paced`] at `<ms>` per frame.
const PACED: &str = "paced-";

/// A device whose speed the test sets: each batch takes `per_frame` per frame (a sleep, so
/// the same on any machine and load) and returns its input. The wrapped model only answers
/// what the engine asks about it (config, provenance).
struct Paced<M> {
    model: M,
    per_frame: Duration,
}

impl<M: FrameModel> FrameModel for Paced<M> {
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        _format: &FrameFormat,
        _strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        let start = Instant::now();
        std::thread::sleep(self.per_frame * frames.len() as u32);
        let out = frames.iter().map(|f| f.to_vec()).collect();
        let times = StageTimes {
            model: start.elapsed(),
            ..StageTimes::default()
        };
        Ok((out, times))
    }
    fn config(&self) -> &Config {
        self.model.config()
    }
    fn provenance(&self) -> &Provenance {
        self.model.provenance()
    }
    fn device(&self) -> tch::Device {
        self.model.device()
    }
    fn precision(&self) -> Precision {
        self.model.precision()
    }
}

/// The engine of the element named `element`: the failing model for [`FAULTY`], the paced
/// one for `paced-<ms>`, else None (the element starts its usual engine).
pub(super) fn spawn<T: Send + 'static>(
    element: &str,
    model: &ModelSource,
    opts: &Options,
    cfg: &EngineConfig,
) -> Option<Result<(EngineSender<T>, EngineReceiver<T>)>> {
    let (model, opts) = (model.clone(), opts.clone());
    if let Some(ms) = element.strip_prefix(PACED) {
        let per_frame = Duration::from_millis(ms.parse().expect("paced-<ms>"));
        return Some(engine::spawn_with(
            model.to_string(),
            move || {
                Ok(Paced {
                    model: Denoiser::new(model.load(opts.device)?, opts)?,
                    per_frame,
                })
            },
            cfg.clone(),
        ));
    }
    if element != FAULTY {
        return None;
    }
    Some(engine::spawn_with(
        model.to_string(),
        move || {
            Ok(FailAfter {
                model: Denoiser::new(model.load(opts.device)?, opts)?,
                after: FAULTY_AFTER,
                frames_run: Cell::new(0),
            })
        },
        cfg.clone(),
    ))
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("GST_REGISTRY").is_none() {
            // target/<profile>/deps/<this test binary>
            let exe = std::env::current_exe().expect("test binary path");
            let profile = exe
                .parent()
                .and_then(|d| d.parent())
                .expect("target/<profile>");
            std::env::set_var("GST_REGISTRY", profile.join("gst-registry.bin"));
        }
        tch::set_num_threads(1);
        gst::init().expect("gst init");
        crate::plugin_register_static().expect("register the plugin");
    });
}

fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tiny-w8/official_state_dict.safetensors")
        .to_string_lossy()
        .into_owned()
}

/// Run until EOS (Ok) or ERROR (Err with the message), at most `timeout`.
fn wait_eos(pipeline: &gst::Element, timeout: Duration) -> std::result::Result<(), String> {
    let msg = pipeline
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .ok_or("timed out")?;
    match msg.view() {
        gst::MessageView::Error(e) => Err(format!("{} ({:?})", e.error(), e.debug())),
        _ => Ok(()),
    }
}

/// Batches are always full (the source never waits, max-latency is an hour), so exactly
/// [`FAULTY_AFTER`] frames come out whatever the machine's speed.
#[test]
fn model_failure_mid_stream_posts_an_error_without_deadlock() {
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc ! video/x-raw,width=32,height=32 \
         ! clipdenoise name={FAULTY} model=\"{}\" batch-size=2 max-latency=60000 queue-size=2 \
         ! fakesink",
        fixture()
    ))
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let err = wait_eos(&pipeline, Duration::from_secs(30)).expect_err("an ERROR, not EOS");
    assert!(
        err.contains("injected") && err.contains("model failed"),
        "{err}"
    );
    let d = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name(FAULTY)
        .unwrap();
    let stats = d.property::<gst::Structure>("stats");
    assert_eq!(stats.get::<u64>("frames-out").unwrap(), FAULTY_AFTER);
    let t0 = Instant::now();
    pipeline.set_state(gst::State::Null).expect("to NULL");
    let t = t0.elapsed();
    assert!(t < Duration::from_secs(1), "NULL took {t:?}");
}

/// What reached a syncing sink from a live source through a paced element.
struct LiveRun {
    /// Frame numbers (from the timestamps) of the frames that reached the sink, in order.
    kept: Vec<u64>,
    /// The sink's counts: rendered, and dropped as later than 20 ms (as video sinks do).
    rendered: u64,
    late: u64,
    /// The element's `stats` at the end.
    stats: gst::Structure,
}

/// `frames` frames of a live source at `fps` through `paced-<model_ms>` into a syncing sink,
/// handling LATENCY messages as applications do. One at a time: these tests time a sleeping
/// model, and the others' threads would only add scheduling delays.
fn run_live(fps: u64, model_ms: u64, frames: u64) -> LiveRun {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    init();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true pattern=black num-buffers={frames} \
         ! video/x-raw,format=RGB,width=64,height=48,framerate={fps}/1 \
         ! clipdenoise name={PACED}{model_ms} model=\"{}\" temporal=0 \
         ! fakesink name=sink sync=true qos=true max-lateness=20000000",
        fixture()
    ))
    .unwrap();
    let bin = pipeline.downcast_ref::<gst::Bin>().unwrap();
    let sink = bin.by_name("sink").unwrap();
    let element = bin.by_name(&format!("{PACED}{model_ms}")).unwrap();
    let kept = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let probe_kept = kept.clone();
    sink.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(pts) = info.buffer().and_then(|b| b.pts()) {
                let n = (pts.nseconds() * fps + 500_000_000) / 1_000_000_000;
                probe_kept.lock().unwrap().push(n);
            }
            gst::PadProbeReturn::Ok
        });
    // Watchdog: the source's own duration plus a generous margin.
    let deadline = Instant::now() + Duration::from_secs(frames / fps + 60);
    // Frames that arrive while the model warms up are thinned (they would be late): start
    // the source once the warm-up (READY->PAUSED, the size is fixed upstream) is over.
    pipeline.set_state(gst::State::Paused).unwrap();
    while element
        .property::<gst::Structure>("stats")
        .get::<f64>("warm-up-ms")
        .unwrap()
        == 0.0
    {
        assert!(Instant::now() < deadline, "watchdog: no warm-up");
        std::thread::sleep(Duration::from_millis(5));
    }
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let msg = bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(left.as_nanos() as u64),
            &[
                gst::MessageType::Eos,
                gst::MessageType::Error,
                gst::MessageType::Latency,
            ],
        );
        match msg.as_ref().map(|m| m.view()) {
            Some(gst::MessageView::Latency(_)) => {
                let _ = bin.recalculate_latency();
            }
            Some(gst::MessageView::Eos(_)) => break,
            Some(gst::MessageView::Error(e)) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("{} ({:?})", e.error(), e.debug());
            }
            _ => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("watchdog: no EOS after {frames} frames at {fps} fps");
            }
        }
    }
    let sink_stats = sink.property::<gst::Structure>("stats");
    let stats = element.property::<gst::Structure>("stats");
    pipeline.set_state(gst::State::Null).unwrap();
    let kept = kept.lock().unwrap().clone();
    LiveRun {
        kept,
        rendered: sink_stats.get::<u64>("rendered").unwrap(),
        late: sink_stats.get::<u64>("dropped").unwrap(),
        stats,
    }
}

fn count(stats: &gst::Structure, field: &str) -> u64 {
    stats.get::<u64>(field).unwrap()
}

/// A device 10x faster than the source (5 ms a frame, a frame every 50 ms): every frame goes
/// through, in order and on time.
#[test]
fn below_the_device_rate_a_live_source_is_not_thinned() {
    let frames = 60;
    let run = run_live(20, 5, frames);
    eprintln!(
        "below: {} rendered, {} late; {}",
        run.rendered, run.late, run.stats
    );
    assert_eq!(count(&run.stats, "frames-thinned"), 0, "{}", run.stats);
    assert_eq!(count(&run.stats, "frames-out"), frames, "{}", run.stats);
    assert_eq!(run.kept, (0..frames).collect::<Vec<_>>());
    assert_eq!(run.rendered + run.late, frames);
    // On time (one frame may meet a scheduling stall of a busy machine, see below).
    assert!(run.late * 20 <= frames, "{} late: {}", run.late, run.stats);
}

/// A source at 50 frames/s into a device that takes 60 ms a frame (16.7 frames/s): it is
/// thinned to about the device's rate, the frames that go through leave on time, and they are
/// spread evenly (every third or fourth frame, no bursts and no long holes).
#[test]
fn above_the_device_rate_a_live_source_is_thinned_evenly_and_on_time() {
    let (fps, model_ms, frames) = (50, 60, 150);
    let run = run_live(fps, model_ms, frames);
    eprintln!(
        "above: {} rendered, {} late, kept {:?}; {}",
        run.rendered, run.late, run.kept, run.stats
    );
    // On time: a latency that leaves out the queueing or the model's time makes most frames
    // late; one scheduling stall of a busy machine (the model's sleep woken 100 ms late) may
    // make one late whatever the element does.
    assert!(
        run.late * 20 <= run.rendered,
        "{} of {} frames reached the sink late: {}",
        run.late,
        run.rendered,
        run.stats
    );
    let thinned = count(&run.stats, "frames-thinned");
    let out = count(&run.stats, "frames-out");
    assert!(thinned > 0, "{}", run.stats);
    assert_eq!(out + count(&run.stats, "frames-dropped"), frames);
    assert_eq!(count(&run.stats, "frames-dropped"), thinned, "only thinned");
    // The device's rate over the source's 3 s: 50 frames; at least 80 % of it.
    let possible = frames * 1000 / fps / model_ms;
    assert!(out * 10 >= possible * 8, "{out} of a possible {possible}");
    // Evenly spread: never two frames closer than the model's time allows, and the typical
    // gap is the model's time (3 frames at 20 ms) or one more.
    let gaps: Vec<u64> = run.kept.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|&g| g >= 2), "bursts: {gaps:?}");
    let mut sorted = gaps.clone();
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    assert!((3..=4).contains(&median), "gaps {gaps:?}");
    // The reported latency: the model's 60 ms (and the jitter of its sleeps on a busy
    // machine) and one 20 ms interval of queueing, not 2 batches and max-latency (170 ms);
    // frames finish within it.
    let latency = run.stats.get::<f64>("latency-ms").unwrap();
    assert!((80.0..150.0).contains(&latency), "latency {latency} ms");
    let mean = run.stats.get::<f64>("mean-latency-ms").unwrap();
    assert!(
        mean <= latency,
        "mean {mean} ms above the reported {latency} ms"
    );
}
