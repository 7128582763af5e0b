//! What the written file holds: its video frames (and its audio streams' packets) counted by
//! demuxing it again (no decoding), so that the summary gives the count in the file rather
//! than what was pushed into the encoder (an encoder that is not drained at the end loses
//! frames silently) or into the mux.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail};
use gst::prelude::*;

/// Far above what demuxing a file takes; only a stuck pipeline reaches it.
const LIMIT: gst::ClockTime = gst::ClockTime::from_seconds(300);

/// What a written file holds.
#[derive(Debug, Default)]
pub struct Counts {
    /// Video frames (coded pictures) of the first video stream.
    pub video: u64,
    /// Packets of each audio stream, in the order the file gives them.
    pub audio: Vec<u64>,
}

/// The counts of `path`.
pub fn count(path: &Path) -> anyhow::Result<Counts> {
    let pipeline = gst::Pipeline::new();
    let video = Arc::new(AtomicU64::new(0));
    let audio = Arc::new(Mutex::new(Vec::new()));
    let result = count_into(&pipeline, path, &video, &audio);
    let _ = pipeline.set_state(gst::State::Null);
    result.map(|()| Counts {
        video: video.load(Ordering::Relaxed),
        audio: audio
            .lock()
            .unwrap()
            .iter()
            .map(|a: &Arc<AtomicU64>| a.load(Ordering::Relaxed))
            .collect(),
    })
}

type Audio = Arc<Mutex<Vec<Arc<AtomicU64>>>>;

fn count_into(
    pipeline: &gst::Pipeline,
    path: &Path,
    count: &Arc<AtomicU64>,
    audio: &Audio,
) -> anyhow::Result<()> {
    let src = super::pipeline::make("filesrc", None)?;
    src.set_property("location", path.to_string_lossy().as_ref());
    let parse = super::pipeline::make("parsebin", None)?;
    pipeline.add_many([&src, &parse])?;
    src.link(&parse)?;
    let weak = pipeline.downgrade();
    let count = count.clone();
    let audio = audio.clone();
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
        let kind = caps.structure(0).map(|s| s.name().to_string());
        let kind = kind.as_deref().unwrap_or("");
        if kind.starts_with("audio/") {
            let n = Arc::new(AtomicU64::new(0));
            audio.lock().unwrap().push(n.clone());
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                n.fetch_add(1, Ordering::Relaxed);
                gst::PadProbeReturn::Ok
            });
        }
        if kind.starts_with("video/") && !video_seen.swap(true, Ordering::SeqCst) {
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
