//! A video file's frames without decoding them: its first video stream through parsebin into
//! an appsink, each packet's timestamp and keyframe flag. Used to plan (the frame table) and
//! to check a written segment (its frame count, first packet a keyframe).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use clipdenoise::job::FrameTime;
use gst::prelude::*;

/// No packet for this long: the pipeline is stuck.
const STALL: Duration = Duration::from_secs(120);

pub struct Scan {
    /// Display order (sorted by running time, which `pts_ns` holds).
    pub frames: Vec<FrameTime>,
    /// End of the last frame, ns.
    pub duration_ns: u64,
    /// Whether the first packet in decoding order is a keyframe.
    pub first_is_keyframe: bool,
    /// PTS minus running time, ns (the last packet's segment's: a demuxer may replace its
    /// first segment once it has seen every stream's start); `frames` follow it.
    pub pts_offset_ns: i64,
}

pub fn scan(path: &Path) -> anyhow::Result<Scan> {
    crate::video::init_gstreamer()?;
    let pipeline = gst::Pipeline::new();
    let src = gst::ElementFactory::make("filesrc")
        .property("location", path.to_string_lossy().as_ref())
        .build()?;
    let parse = gst::ElementFactory::make("parsebin").build()?;
    let sink = gst_app::AppSink::builder().sync(false).build();
    pipeline.add_many([&src, &parse, sink.upcast_ref()])?;
    src.link(&parse)?;
    let weak = pipeline.downgrade();
    let sink_pad = sink.static_pad("sink").expect("appsink has sink");
    parse.connect_pad_added(move |_, pad| {
        let is_video = pad
            .current_caps()
            .unwrap_or_else(|| pad.query_caps(None))
            .structure(0)
            .is_some_and(|s| s.name().starts_with("video/"));
        if is_video && !sink_pad.is_linked() {
            let _ = pad.link(&sink_pad);
        } else if let Some(p) = weak.upgrade() {
            // Not synchronised, not waiting to preroll: a stream added to the playing
            // pipeline would otherwise hold it (and the video) once it ends or lags (a
            // Matroska file whose audio ends before its video stalled here).
            if let Ok(f) = gst::ElementFactory::make("fakesink")
                .property("sync", false)
                .property("async", false)
                .build()
            {
                let _ = p.add(&f);
                let _ = f.sync_state_with_parent();
                let _ = pad.link(&f.static_pad("sink").expect("fakesink has sink"));
            }
        }
    });
    let result = run(&pipeline, &sink, path);
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn run(pipeline: &gst::Pipeline, sink: &gst_app::AppSink, path: &Path) -> anyhow::Result<Scan> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        error_of(&bus, path).unwrap_or_else(|| anyhow!("{}: cannot be read", path.display()))
    })?;
    let mut frames = Vec::new();
    let mut end = 0u64;
    let mut first_is_keyframe = None;
    let mut pts_offset_ns = 0i64;
    let mut last = Instant::now();
    loop {
        if let Some(s) = sink.try_pull_sample(gst::ClockTime::from_mseconds(100)) {
            last = Instant::now();
            let buf = s
                .buffer()
                .ok_or_else(|| anyhow!("a sample without a buffer"))?;
            let Some(pts) = buf.pts() else {
                bail!(
                    "{}: a video packet has no timestamp; remux it first (ffmpeg -i IN -c copy OUT.mkv)",
                    path.display()
                );
            };
            let keyframe = !buf.flags().contains(gst::BufferFlags::DELTA_UNIT);
            first_is_keyframe.get_or_insert(keyframe);
            // The running time (edit lists applied: what players show and `video`'s ranges
            // use); a packet outside the segment is not shown, and not counted.
            let running = s
                .segment()
                .and_then(|g| g.downcast_ref::<gst::ClockTime>().cloned())
                .map_or(Some(pts), |g| g.to_running_time(pts));
            let Some(rt) = running else {
                continue;
            };
            // PTS for now, turned into running times by the last segment's offset at the end.
            pts_offset_ns = pts.nseconds() as i64 - rt.nseconds() as i64;
            frames.push(FrameTime {
                pts_ns: pts.nseconds(),
                keyframe,
            });
            end = end.max((pts + buf.duration().unwrap_or(gst::ClockTime::ZERO)).nseconds());
            continue;
        }
        if sink.is_eos() {
            break;
        }
        if let Some(e) = error_of(&bus, path) {
            return Err(e);
        }
        if bus.pop_filtered(&[gst::MessageType::Eos]).is_some() {
            // EOS on the bus but not at the appsink: it was never linked.
            bail!("{}: the file has no video stream", path.display());
        }
        if last.elapsed() > STALL {
            bail!("{}: no packet for {} s", path.display(), STALL.as_secs());
        }
    }
    if frames.is_empty() {
        bail!("{}: the file has no video frames", path.display());
    }
    // One offset for all: Matroska's demuxer replaces its first segment (starting at the
    // video's first frame) once it has seen the audio start earlier, and the running times of
    // the first packets would not follow the others'.
    let running = |pts: u64| (pts as i64 - pts_offset_ns).max(0) as u64;
    for f in &mut frames {
        f.pts_ns = running(f.pts_ns);
    }
    frames.sort_by_key(|f| f.pts_ns);
    Ok(Scan {
        frames,
        duration_ns: running(end),
        first_is_keyframe: first_is_keyframe.unwrap_or(false),
        pts_offset_ns,
    })
}

fn error_of(bus: &gst::Bus, path: &Path) -> Option<anyhow::Error> {
    while let Some(msg) = bus.pop_filtered(&[gst::MessageType::Error]) {
        if let gst::MessageView::Error(e) = msg.view() {
            return Some(anyhow!("{}: {}", path.display(), e.error()));
        }
    }
    None
}
