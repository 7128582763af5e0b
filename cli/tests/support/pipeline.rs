//! GStreamer in the test process itself: one initialisation on the tests' registry, and
//! pipelines run to EOS under a watchdog (an ERROR or no EOS in time fails the test, naming
//! the pipeline), as the tests use to make input clips and read outputs back.

use std::sync::Once;
use std::time::Duration;

use gst::prelude::*;

/// The bound of one pipeline run in the test process: far above what the tests' small clips
/// need, so only a hang reaches it.
pub const PIPELINE_WATCHDOG: Duration = Duration::from_secs(60);

/// `gst::init` once, on the registry the binary's children use.
pub fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        std::env::set_var("GST_REGISTRY", super::child::registry());
        gst::init().unwrap();
    });
}

/// Wait at most `limit` for EOS; an ERROR message or no EOS in time fails the test, naming
/// `what`.
pub fn wait_eos_within(p: &impl IsA<gst::Element>, what: &str, limit: Duration) {
    let msg = p
        .bus()
        .unwrap()
        .timed_pop_filtered(
            gst::ClockTime::from_nseconds(limit.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        )
        .unwrap_or_else(|| panic!("{what}: no EOS within {} s", limit.as_secs()));
    if let gst::MessageView::Error(e) = msg.view() {
        panic!("{what}: {} ({:?})", e.error(), e.debug());
    }
}

/// [`wait_eos_within`] [`PIPELINE_WATCHDOG`].
pub fn wait_eos(p: &impl IsA<gst::Element>, what: &str) {
    wait_eos_within(p, what, PIPELINE_WATCHDOG);
}

/// Run a gst-launch style pipeline to EOS under the watchdog.
pub fn gst_run(desc: &str) {
    init();
    let p = gst::parse::launch(desc).unwrap();
    p.set_state(gst::State::Playing).unwrap();
    wait_eos(&p, desc);
    p.set_state(gst::State::Null).unwrap();
}

/// A 160x96 30 fps clip of `frames` frames of videotestsrc's `pattern`, H.264 (x264,
/// ultrafast) through `mux` (a muxer with its properties, e.g. `mp4mux faststart=true`) into
/// `path`, made under the watchdog.
pub fn h264_clip(path: &std::path::Path, frames: u32, pattern: &str, mux: &str) {
    gst_run(&format!(
        "videotestsrc num-buffers={frames} pattern={pattern} ! \
         video/x-raw,width=160,height=96,framerate=30/1 ! x264enc speed-preset=ultrafast ! \
         h264parse ! {mux} ! filesink location={}",
        path.display()
    ));
}
