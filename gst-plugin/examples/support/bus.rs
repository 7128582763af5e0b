//! Running a live pipeline to its end as applications do (gst-launch-1.0 among them): LATENCY
//! messages make the pipeline take the elements' new latency. Shared by the live benchmark
//! (`examples/live_rate.rs`) and the element's paced-model tests (`src/clipdenoise/tests.rs`).

use std::time::Instant;

use gst::prelude::*;

/// Wait for EOS on `pipeline` (already started), recalculating its latency on every LATENCY
/// message; an ERROR (its text) or passing `deadline` (the watchdog) is an Err.
pub fn run_to_eos(pipeline: &gst::Element, deadline: Instant) -> Result<(), String> {
    let bin = pipeline
        .downcast_ref::<gst::Bin>()
        .ok_or("the pipeline is not a bin")?;
    let bus = pipeline.bus().ok_or("no bus")?;
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
            Some(gst::MessageView::Eos(_)) => return Ok(()),
            Some(gst::MessageView::Error(e)) => {
                return Err(format!("{} ({:?})", e.error(), e.debug()))
            }
            _ => return Err("timed out (watchdog)".into()),
        }
    }
}
