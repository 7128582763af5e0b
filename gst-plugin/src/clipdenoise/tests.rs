//! The element with a model that fails mid-stream: the error reaches the bus and nothing
//! deadlocks. A unit test, so that the failing model stays out of the element's public
//! interface: under `cfg(test)` the element named [`FAULTY`] runs the real model wrapped in
//! [`FailAfter`].

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

/// The engine of the element named `element`: the failing model for [`FAULTY`], else None
/// (the element starts its usual engine).
pub(super) fn spawn<T: Send + 'static>(
    element: &str,
    model: &ModelSource,
    opts: &Options,
    cfg: &EngineConfig,
) -> Option<Result<(EngineSender<T>, EngineReceiver<T>)>> {
    if element != FAULTY {
        return None;
    }
    let (model, opts) = (model.clone(), opts.clone());
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
