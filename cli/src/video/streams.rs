//! Routing parsebin's streams as they appear (a job segment's video held until the seek to
//! its keyframe, [`super::seek`], is done): the first video stream to the denoising chain,
//! audio to the mux (copied, or re-encoded when the container cannot take it), subtitles to
//! the mux where the container holds them ([`super::subtitles`]), anything else to a fakesink
//! with a note. A file without video is an error.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::anyhow;
use gst::prelude::*;

use super::pipeline::make;
use super::plan::{Container, Plan};
use super::range::{Cut, Range};
use super::seek::Seeker;
use super::state::{extend, Shared};
use super::subtitles;

/// Link parsebin's pads to the chain that starts at `pre` and to `mux` as they appear.
pub fn connect(
    pipeline: &gst::Pipeline,
    parse: &gst::Element,
    pre: &gst::Element,
    mux: &gst::Element,
    plan: &Plan,
    shared: &Arc<Shared>,
) {
    let weak_pipeline = pipeline.downgrade();
    let sh = shared.clone();
    let (container, no_audio, range, mux) =
        (plan.container, plan.no_audio, plan.range, mux.clone());
    // A job segment's subtitles would be dropped by `join` (it takes the video only).
    let subtitles = plan.keep.is_none();
    let pre_sink = pre.static_pad("sink").expect("videoconvert has sink");
    // A job segment whose warm-up starts after the first frame: decoding starts at its
    // keyframe. (Not yet `--start`: its audio streams would need their own first segments.)
    let seeker = range
        .zip(plan.pts_offset)
        .filter(|_| plan.seek)
        .map(|(r, off)| Seeker::new(r.start, off));
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak_pipeline.upgrade() else {
            return;
        };
        let route = Route {
            pipeline: &pipeline,
            pre_sink: &pre_sink,
            mux: &mux,
            container,
            no_audio,
            subtitles,
            range,
            seeker: seeker.as_ref(),
            shared: &sh,
        };
        if let Err(e) = route.stream(pad) {
            sh.fail(format!("{e:#}"));
            post_cli_error(&pipeline);
        }
    });
    let sh = shared.clone();
    let weak_pipeline = pipeline.downgrade();
    parse.connect_no_more_pads(move |_| {
        if let Some(p) = weak_pipeline.upgrade() {
            check_video_seen(&p, &sh);
        }
    });
}

/// Wake the main loop: a callback recorded an error in [`Shared`].
fn post_cli_error(pipeline: &gst::Pipeline) {
    let _ = pipeline.post_message(gst::message::Application::new(gst::Structure::new_empty(
        "cli-error",
    )));
}

/// Fail when the input has no video stream. parsebin exposes all streams before any data
/// flows, so this is called at its `no-more-pads` and when the first buffer of another stream
/// leaves it (parsebin 1.22 does not always emit `no-more-pads`).
fn check_video_seen(pipeline: &gst::Pipeline, shared: &Shared) {
    if shared.video_seen.load(Ordering::SeqCst) {
        return;
    }
    let what =
        if shared.audio.lock().unwrap().is_empty() && !shared.had_audio.load(Ordering::SeqCst) {
            "no video stream"
        } else {
            "audio but no video stream"
        };
    shared.fail(format!(
        "{}: the file has {what}; nothing to denoise",
        shared.input.display()
    ));
    post_cli_error(pipeline);
}

/// Where parsebin's streams go.
struct Route<'a> {
    pipeline: &'a gst::Pipeline,
    /// The sink pad of the video chain.
    pre_sink: &'a gst::Pad,
    mux: &'a gst::Element,
    container: Container,
    no_audio: bool,
    /// Whether subtitle tracks are kept where the container holds them.
    subtitles: bool,
    range: Option<Range>,
    /// Starts the video's decoding at the range's keyframe (a job segment's).
    seeker: Option<&'a Arc<Seeker>>,
    shared: &'a Arc<Shared>,
}

impl Route<'_> {
    /// Link one of parsebin's streams.
    fn stream(&self, pad: &gst::Pad) -> anyhow::Result<()> {
        let caps = pad
            .current_caps()
            .or_else(|| Some(pad.query_caps(None)))
            .expect("caps");
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        let kind = name.split('/').next().unwrap_or("");
        let shared = self.shared;
        shared.had_audio.fetch_or(kind == "audio", Ordering::SeqCst);
        if kind != "video" || shared.video_seen.load(Ordering::SeqCst) {
            let weak = self.pipeline.downgrade();
            let sh = shared.clone();
            pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
                if let Some(p) = weak.upgrade() {
                    check_video_seen(&p, &sh);
                }
                gst::PadProbeReturn::Remove
            });
        }
        if kind == "video" && !shared.video_seen.swap(true, Ordering::SeqCst) {
            return self.video(pad);
        }
        if kind == "audio" && !self.no_audio {
            return self.audio(pad, &caps, &name);
        }
        let mut why = None;
        if let Some(what) = subtitle(&name).filter(|_| self.subtitles) {
            match self.subtitle(pad, &caps, &name, what)? {
                None => return Ok(()),
                Some(w) => why = Some(w),
            }
        }
        // A second video stream, subtitles, data, or audio with --no-audio: consume and drop.
        let sink = make("fakesink", None)?;
        sink.set_property("sync", false);
        sink.set_property("async", false);
        self.pipeline.add(&sink)?;
        sink.sync_state_with_parent()?;
        pad.link(&sink.static_pad("sink").expect("fakesink has sink"))?;
        if kind == "video" {
            shared.note(format!(
                "only the first video stream is denoised; another one ({name}) is left out"
            ));
        } else if kind != "audio" {
            let why = why.map(|w| format!(": {w}")).unwrap_or_default();
            shared.note(format!("{} left out{why}", other_stream(&name)));
        }
        Ok(())
    }

    /// The video stream: queue ! decodebin, whose video pad feeds the chain.
    fn video(&self, pad: &gst::Pad) -> anyhow::Result<()> {
        let queue = make("queue", None)?;
        let dec = make("decodebin", None)?;
        self.pipeline.add_many([&queue, &dec])?;
        queue.link(&dec)?;
        if let Some(s) = self.seeker {
            s.watch(pad);
            s.hold(&queue.static_pad("src").expect("queue has src"));
        }
        let target = self.pre_sink.clone();
        let sh = self.shared.clone();
        dec.connect_pad_added(move |_, dpad| {
            // At an early end (a file cut before its first complete frame) decodebin exposes
            // its pad without caps: link it anyway, so that the EOS reaches the mux and the
            // job ends ("no video frames could be decoded") instead of waiting for ever.
            let not_video = dpad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| !s.name().starts_with("video/")))
                .unwrap_or(false);
            if !not_video && !target.is_linked() {
                if let Err(e) = dpad.link(&target) {
                    sh.fail(format!("cannot link the decoded video: {e}"));
                }
            }
        });
        for e in [&queue, &dec] {
            e.sync_state_with_parent()?;
        }
        pad.link(&queue.static_pad("sink").expect("queue has sink"))?;
        *self.shared.video_head.lock().unwrap() = Some(self.pre_sink.clone());
        Ok(())
    }

    /// An audio stream: queue ! mux when the container takes it as is, else
    /// queue ! decodebin ! audioconvert ! audioresample ! encoder ! mux.
    fn audio(&self, pad: &gst::Pad, caps: &gst::Caps, name: &str) -> anyhow::Result<()> {
        let container = self.container;
        let tmpl = self
            .mux
            .pad_template("audio_%u")
            .ok_or_else(|| anyhow!("{} takes no audio", container.muxer()))?;
        let label = audio_label(caps, name);
        // Audio waits in this queue while the (slower) video catches up in the mux: no limits
        // but time, which the demuxer's interleaving keeps small.
        let queue = make("queue", None)?;
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", 60 * gst::ClockTime::SECOND.nseconds());
        let mut copied_entry = None;
        let reencode = if tmpl.caps().can_intersect(caps) {
            let mut audio = self.shared.audio.lock().unwrap();
            copied_entry = Some(audio.len());
            audio.push(format!("{label} copied"));
            None
        } else {
            Some(self.reencoder(&label)?)
        };
        self.pipeline.add(&queue)?;
        let mux_pad = self
            .mux
            .request_pad_simple("audio_%u")
            .ok_or_else(|| anyhow!("{} cannot take another audio stream", container.muxer()))?;
        match &reencode {
            None => {
                queue
                    .static_pad("src")
                    .expect("queue has src")
                    .link(&mux_pad)?;
            }
            Some(chain) => {
                queue.link(&chain[0])?;
                chain[3]
                    .static_pad("src")
                    .expect("encoder has src")
                    .link(&mux_pad)?;
            }
        }
        let sh = self.shared.clone();
        let qsink = queue.static_pad("sink").expect("queue has sink");
        qsink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(buf)) = &info.data {
                if let Some(pts) = buf.pts() {
                    let end = pts + buf.duration().unwrap_or(gst::ClockTime::ZERO);
                    extend(&sh.audio_end, end, true);
                }
            }
            gst::PadProbeReturn::Ok
        });
        if let Some(i) = copied_entry {
            self.follow_copied(&qsink, i, &label);
        }
        cut_to_video(
            &queue.static_pad("src").expect("queue has src"),
            self.shared.clone(),
            self.range,
        );
        for e in reencode.iter().flatten() {
            e.sync_state_with_parent()?;
        }
        queue.sync_state_with_parent()?;
        pad.link(&qsink)?;
        self.shared.heads.lock().unwrap().push(qsink);
        Ok(())
    }

    /// Keep the summary of the copied audio stream `i` (entering at `qsink`) true: parsebin may
    /// expose the pad with caps that are not final yet (MPEG audio without its layer), so the
    /// stream is named from the caps its data comes with; and an MP4 whose edit list skips
    /// the encoder's priming (ffmpeg's and cameras' AAC) reaches us without the packets the
    /// list trims (GStreamer's MP4 reader drops them): recorded (with the input's track) for
    /// the note `report` gives, which says what was left out.
    fn follow_copied(&self, qsink: &gst::Pad, i: usize, label: &str) {
        let sh = self.shared.clone();
        let mp4 = self.pipeline.by_name("parse").is_some_and(|p| {
            p.downcast::<gst::Bin>().is_ok_and(|b| {
                b.iterate_recurse()
                    .into_iter()
                    .flatten()
                    .any(|e| e.factory().is_some_and(|f| f.name() == "qtdemux"))
            })
        });
        let copied = Arc::new(super::state::Copied {
            index: i,
            label: std::sync::Mutex::new(label.to_string()),
            ..Default::default()
        });
        sh.copied.lock().unwrap().push(copied.clone());
        let summary = move |label: &str, trimmed: bool| match trimmed {
            true => format!("{label} copied (as trimmed by the MP4's edit list)"),
            false => format!("{label} copied"),
        };
        qsink.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            let Some(gst::PadProbeData::Event(e)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let trimmed = copied.trimmed.lock().unwrap().is_some();
            match e.view() {
                gst::EventView::StreamStart(s) => {
                    // qtdemux's stream ids end with the track id: ".../002".
                    let track = s
                        .stream_id()
                        .rsplit('/')
                        .next()
                        .and_then(|t| t.parse().ok());
                    *copied.track.lock().unwrap() = track;
                }
                gst::EventView::Caps(c) => {
                    let name = c.caps().structure(0).map(|s| s.name().to_string());
                    let mut label = copied.label.lock().unwrap();
                    *label = audio_label(&c.caps_owned(), name.as_deref().unwrap_or(""));
                    if let Some(entry) = sh.audio.lock().unwrap().get_mut(i) {
                        *entry = summary(&label, trimmed);
                    }
                }
                gst::EventView::Segment(seg) if mp4 && !trimmed => {
                    let skipped = seg
                        .segment()
                        .downcast_ref::<gst::ClockTime>()
                        .and_then(|s| s.start())
                        .filter(|s| !s.is_zero());
                    if skipped.is_some() {
                        *copied.trimmed.lock().unwrap() = skipped;
                        if let Some(entry) = sh.audio.lock().unwrap().get_mut(i) {
                            *entry = summary(&copied.label.lock().unwrap(), true);
                        }
                    }
                }
                _ => {}
            }
            gst::PadProbeReturn::Ok
        });
    }

    /// decodebin, audioconvert, audioresample and the first encoder found for the container,
    /// added and linked (decodebin's pad when it appears), with a note.
    fn reencoder(&self, label: &str) -> anyhow::Result<[gst::Element; 4]> {
        let container = self.container;
        let (enc_name, enc_label) = container
            .audio_encoders()
            .iter()
            .find(|(f, _)| gst::ElementFactory::find(f).is_some())
            .ok_or_else(|| {
                anyhow!(
                    "no audio encoder for .{} (install gstreamer1.0-libav)",
                    container.ext()
                )
            })?;
        self.shared.note(format!(
            "the audio ({label}) cannot go into .{} unchanged: re-encoding it to {enc_label}",
            container.ext()
        ));
        self.shared
            .audio
            .lock()
            .unwrap()
            .push(format!("{label} re-encoded to {enc_label}"));
        let d = make("decodebin", None)?;
        let conv = make("audioconvert", None)?;
        let res = make("audioresample", None)?;
        let enc = make(enc_name, None)?;
        self.pipeline.add_many([&d, &conv, &res, &enc])?;
        gst::Element::link_many([&conv, &res, &enc])?;
        let conv_sink = conv.static_pad("sink").expect("audioconvert has sink");
        d.connect_pad_added(move |_, dpad| {
            if !conv_sink.is_linked() {
                let _ = dpad.link(&conv_sink);
            }
        });
        Ok([d, conv, res, enc])
    }
}

impl Route<'_> {
    /// A subtitle stream (`what`: "text", "SSA", ...): queue ! mux where the container holds
    /// that kind, cut and ended as the audio is; None when it is kept, else why not. Text comes
    /// out of the demuxers as Pango markup (Matroska's SubRip: the cue's own tags, or its text
    /// escaped when no cue so far had a tag) or plain UTF-8; the muxers take UTF-8: Matroska
    /// the cue as the input had it (tags kept, escapes undone), MP4/MOV (timed text, which has
    /// no inline tags) the text without tags.
    fn subtitle(
        &self,
        pad: &gst::Pad,
        caps: &gst::Caps,
        name: &str,
        what: &str,
    ) -> anyhow::Result<Option<String>> {
        let ext = self.container.ext();
        // webmmux offers matroskamux's subtitle pads, but WebM holds WebVTT only (and
        // GStreamer 1.22 writes no WebVTT): a SubRip track there is a file players refuse.
        let tmpl = match self.mux.pad_template("subtitle_%u") {
            Some(t) if self.container != Container::Webm => t,
            _ => return Ok(Some(format!(".{ext} cannot hold {what} subtitles"))),
        };
        let text = name == "text/x-raw";
        let markup = text
            && caps
                .structure(0)
                .and_then(|s| s.get::<&str>("format").ok())
                .is_some_and(|f| f == "pango-markup");
        let out_caps = match text {
            true => gst::Caps::builder("text/x-raw")
                .field("format", "utf8")
                .build(),
            false => caps.clone(),
        };
        if !tmpl.caps().can_intersect(&out_caps) {
            return Ok(Some(format!(".{ext} cannot hold {what} subtitles")));
        }
        let Some(mux_pad) = self.mux.request_pad_simple("subtitle_%u") else {
            return Ok(Some(format!(
                "{} takes no more subtitle tracks",
                self.container.muxer()
            )));
        };
        let queue = make("queue", None)?;
        queue.set_property("max-size-buffers", 0u32);
        queue.set_property("max-size-bytes", 0u32);
        queue.set_property("max-size-time", 60 * gst::ClockTime::SECOND.nseconds());
        self.pipeline.add(&queue)?;
        queue
            .static_pad("src")
            .expect("queue has src")
            .link(&mux_pad)?;
        let qsink = queue.static_pad("sink").expect("queue has sink");
        if matches!(self.container, Container::Mp4 | Container::Mov) {
            subtitles::end_cues(&mux_pad);
        }
        if text {
            let strip = self.container != Container::Mkv;
            subtitles::as_utf8(pad, out_caps, markup, strip);
        }
        if matches!(self.container, Container::Mp4 | Container::Mov) {
            subtitles::gaps_as_empty_cues(pad, &qsink);
        }
        cut_to_video(
            &queue.static_pad("src").expect("queue has src"),
            self.shared.clone(),
            self.range,
        );
        queue.sync_state_with_parent()?;
        // The caps are checked by the probe's rewrite, not by the link (Pango markup in).
        pad.link_full(&qsink, gst::PadLinkCheck::empty())?;
        self.shared.heads.lock().unwrap().push(qsink);
        self.shared
            .subtitles
            .lock()
            .unwrap()
            .push(format!("{what} copied"));
        Ok(None)
    }
}

/// Drop the audio outside --start/--duration/--to (its times then start at 0, as the video's
/// do), and the audio that starts at or after [`Shared::audio_cut`] (set when the job ends
/// early: Ctrl-C, --to): the audio queued ahead of the (slower) video would otherwise run on
/// past the last frame.
fn cut_to_video(pad: &gst::Pad, shared: Arc<Shared>, range: Option<Range>) {
    let keep = move |t: gst::ClockTime| !shared.audio_cut.lock().unwrap().is_some_and(|c| t >= c);
    if let Some(r) = range {
        Cut::new(r).install(pad, || {}, || {}, keep);
        return;
    }
    pad.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        let pts = match &info.data {
            Some(gst::PadProbeData::Buffer(b)) => b.pts(),
            _ => None,
        };
        if pts.is_some_and(|p| !keep(p)) {
            drop(info.take_buffer()); // taken and handled: see range::Cut::install
            return gst::PadProbeReturn::Handled;
        }
        gst::PadProbeReturn::Ok
    });
}

/// The kind of subtitle a stream of caps `name` is ("text", "SSA", ...), None if it is none.
fn subtitle(name: &str) -> Option<&'static str> {
    match name {
        "text/x-raw" => Some("text"),
        "application/x-ssa" => Some("SSA"),
        "application/x-ass" => Some("ASS"),
        "application/x-subtitle-vtt" => Some("WebVTT"),
        "application/x-usf" => Some("USF"),
        "subpicture/x-dvd" => Some("DVD bitmaps"),
        "subpicture/x-pgs" => Some("PGS bitmaps"),
        "subpicture/x-dvb" => Some("DVB bitmaps"),
        _ => None,
    }
}

/// A stream that is neither audio nor video, in plain words: "subtitle track (SSA)".
fn other_stream(name: &str) -> String {
    match subtitle(name) {
        Some(s) => format!("subtitle track ({s})"),
        None if name == "application/x-onvif-metadata" || name.starts_with("meta/") => {
            format!("metadata track ({name})")
        }
        None => format!("a {name} stream is"),
    }
}

/// "AAC", "Opus", ... from caps.
fn audio_label(caps: &gst::Caps, name: &str) -> String {
    let s = caps.structure(0);
    let int = |f: &str| s.and_then(|s| s.get::<i32>(f).ok());
    match name {
        "audio/mpeg" if int("mpegversion") == Some(1) => match int("layer") {
            Some(1) => "MP1".into(),
            Some(2) => "MP2".into(),
            _ => "MP3".into(),
        },
        "audio/mpeg" => "AAC".into(),
        "audio/x-opus" => "Opus".into(),
        "audio/x-vorbis" => "Vorbis".into(),
        "audio/x-flac" => "FLAC".into(),
        "audio/x-ac3" => "AC-3".into(),
        "audio/x-eac3" => "E-AC-3".into(),
        "audio/x-raw" => "PCM".into(),
        n => n
            .trim_start_matches("audio/")
            .trim_start_matches("x-")
            .to_string(),
    }
}
