//! What the written file holds: its video frames counted by demuxing it again (no decoding),
//! so that the summary gives the count in the file rather than what was pushed into the
//! encoder (an encoder that is not drained at the end loses frames silently).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{anyhow, bail};
use gst::prelude::*;

/// Far above what demuxing a file takes; only a stuck pipeline reaches it.
const LIMIT: gst::ClockTime = gst::ClockTime::from_seconds(300);

/// The video frames (coded pictures) of the first video stream of `path`.
pub fn video_frames(path: &Path) -> anyhow::Result<u64> {
    let pipeline = gst::Pipeline::new();
    let count = Arc::new(AtomicU64::new(0));
    let result = count_into(&pipeline, path, &count);
    let _ = pipeline.set_state(gst::State::Null);
    result.map(|()| count.load(Ordering::Relaxed))
}

fn count_into(pipeline: &gst::Pipeline, path: &Path, count: &Arc<AtomicU64>) -> anyhow::Result<()> {
    let src = super::pipeline::make("filesrc", None)?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let parse = super::pipeline::make("parsebin", None)?;
    pipeline.add_many([&src, &parse])?;
    src.link(&parse)?;
    let weak = pipeline.downgrade();
    let count = count.clone();
    let video_seen = std::sync::atomic::AtomicBool::new(false);
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak.upgrade() else {
            return;
        };
        let Ok(sink) = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .property("async", false)
            .build()
        else {
            return;
        };
        if pipeline.add(&sink).is_err() || sink.sync_state_with_parent().is_err() {
            return;
        }
        let caps = pad.current_caps().unwrap_or_else(|| pad.query_caps(None));
        let video = caps
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        if video && !video_seen.swap(true, Ordering::SeqCst) {
            let n = count.clone();
            // One buffer per picture (a parser flags the first, with the stream's parameter
            // sets, as a header: it is a picture too).
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                n.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        let _ = pad.link(&sink.static_pad("sink").expect("fakesink has sink"));
    });
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|_| anyhow!("cannot read it back"))?;
    let bus = pipeline.bus().expect("a pipeline has a bus");
    match bus.timed_pop_filtered(LIMIT, &[gst::MessageType::Eos, gst::MessageType::Error]) {
        Some(m) => match m.view() {
            gst::MessageView::Error(e) => bail!("reading it back: {}", e.error()),
            _ => Ok(()),
        },
        None => bail!("reading it back took over {} s", LIMIT.seconds()),
    }
}
