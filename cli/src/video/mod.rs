//! `clipdenoise video`: denoise a video file with a GStreamer pipeline around the statically
//! registered `clipdenoise` element:
//!
//! ```text
//! filesrc ! parsebin ─┬─ video: queue ! decodebin ! videoconvert ! videoflip ! clipdenoise ! videoconvert
//!                     │         ! capsfilter ! encoder ! parser ─────────────────────────┐
//!                     ├─ audio: queue (copied as is) ────────────────────────────────────┤ mux ! filesink
//!                     │     or: queue ! decodebin ! audioconvert ! audioresample ! enc ──┘   (temp file)
//!                     └─ other: fakesink
//! ```
//!
//! The mux follows OUTPUT's extension. The video chain from `videoconvert` to the mux is built
//! before the pipeline starts (so the model loads, and fails, before any data flows); parsebin's
//! pads are linked as they appear. No element drops or adds frames (the element's QoS is off,
//! there is no videorate), so frame count, timestamps and duration are the input's.
//!
//! Ctrl-C sends EOS into the head of every branch, the video's first: the frames already inside
//! the element are finished, the audio queued ahead of them is cut where the last frame ends,
//! the mux finalises the file, and it is renamed into place. A second Ctrl-C aborts.
//!
//! The steps: [`plan`] checks the arguments into a [`plan::Plan`], [`pipeline`] and
//! [`streams`] build the pipeline ([`seek`] starts the decoding at the range's keyframe), [`watch`] runs it as a stream of [`watch::VideoEvent`]s
//! that [`run`] renders, [`errors`] words GStreamer's errors, [`report`] finishes the file and
//! prints the summary (with the count [`readback`] reads from the written file), [`temp`] owns the temporary output; [`state`] is what the streaming threads record; [`mp4_tracks`] reads what
//! GStreamer's MP4 reader does not tell (timecode tracks, the packets an edit list trims),
//! [`timecode`] keeps the timecode or notes its loss, [`subtitles`] readies subtitle streams for
//! the mux.

mod errors;
mod format;
pub(crate) mod keep;
mod mp4_tracks;
mod pipeline;
pub(crate) mod plan;
pub(crate) mod quality;
pub(crate) mod range;
mod readback;
mod report;
mod seek;
mod state;
mod stop;
mod streams;
mod subtitles;
mod temp;
mod timecode;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use gst::prelude::*;

use crate::interrupt;
use crate::models::{ModelArgs, StreamArgs};
use crate::progress::{Progress, Speed};
pub(crate) use pipeline::ELEMENT;
use plan::{Codec, Plan};
use watch::{VideoEvent, Watch};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    clipdenoise video noisy.mp4 clean.mp4\n  \
    clipdenoise video noisy.mkv clean.mkv --device cuda --batch-size 8 --precision bf16\n  \
    clipdenoise video in.mov out.webm --strength 0.7 --crf 28\n  \
    clipdenoise video noisy.mp4 clean.mp4 --force --side-by-side compare.png\n  \
    clipdenoise video long.mkv try.mp4 --start 1:30 --duration 5     # try 5 seconds first\n\n\
    The container follows OUTPUT's extension (.mp4, .mkv, .mov, .webm); .mp4 and .mov take h264, h265 and vp9, \
    .mkv those and ffv1, .webm vp9. Audio is copied unchanged when the \
    container takes it (from an MP4 whose edit list trims the audio's priming, as trimmed, with a note that \
    says how many packets were left out), else re-encoded (AAC for .mp4/.mov, Opus for .webm/.mkv) with a note. \
    Subtitle tracks are kept in .mkv (cues as they are) and in .mp4/.mov (as timed text, without tags); .webm \
    leaves them out with a note. A timecode track (MP4/MOV input) is kept into .mov, else named in a note. --start, --duration and --to keep exactly \
    the frames whose times (as players show them) fall in [start, end), the audio cut to the same part, and \
    the output starts at 0 with a keyframe. The frame count given at the end is read back from the written file. \
    The video keeps the input's chroma subsampling (4:2:0, 4:2:2, 4:4:4) and bit depth (8 or 10) where the \
    encoder takes them, else it is converted with a note (10-bit 4:2:0 is denoised at 10 bits); h264 and \
    h265 code an odd frame size (481x271) in 4:4:4, with a note. \
    A clip with a rotation tag (portrait phone video) comes out upright, as ffmpeg shows it. \
    From a file cut short or damaged, what decodes is kept, with a warning that gives the count.\n\n\
    Ctrl-C stops early and still leaves a playable OUTPUT with the frames done so far (the audio cut where they end); press it twice to abort (signals within a quarter second, as a wrapper sends to the process and its group, count once). \
    The file is written as a hidden .NAME.PID.part.EXT next to OUTPUT and renamed at the end; one left by a \
    killed run is removed by the next run writing into that directory.")]
pub struct Args {
    /// Input video (anything GStreamer can demux and decode)
    input: PathBuf,
    /// Output video; its extension picks the container: .mp4, .mkv, .mov or .webm
    output: PathBuf,
    /// Overwrite OUTPUT if it exists
    #[arg(long, short)]
    force: bool,
    /// Also write a before/after PNG of one frame (the middle one) side by side
    #[arg(long, value_name = "PNG")]
    side_by_side: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    stream: StreamArgs,
    /// Video codec (default: h264, or vp9 for .webm)
    #[arg(long, value_enum, help_heading = "Output")]
    codec: Option<Codec>,
    /// Constant-quality level, lower is better (the ranges, from the installed encoders: `clipdenoise video --help`)
    #[arg(long, allow_negative_numbers = true, help_heading = "Output")]
    crf: Option<i64>,
    /// Encoder speed/size trade-off for h264/h265 (x264/x265 preset names)
    #[arg(long, default_value = "medium", value_parser = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"], help_heading = "Output")]
    preset: String,
    /// Leave the audio out
    #[arg(long, help_heading = "Output")]
    no_audio: bool,
    /// Denoise from this time on (seconds like 90 or 2.5, MM:SS or HH:MM:SS)
    #[arg(long, value_name = "TIME", help_heading = "Part")]
    start: Option<String>,
    /// Denoise this long (from --start)
    #[arg(
        long,
        value_name = "TIME",
        conflicts_with = "to",
        help_heading = "Part"
    )]
    duration: Option<String>,
    /// Denoise up to this time of the input
    #[arg(long, value_name = "TIME", help_heading = "Part")]
    to: Option<String>,
}

/// Initialise GStreamer and register the plugin statically (no GST_PLUGIN_PATH needed).
pub(crate) fn init_gstreamer() -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(|| {
        // A failure shows up as the element missing, which `run` and `info` report.
        let _ = gstclipdenoise_element::plugin_register_static();
    });
    Ok(())
}

/// `info`'s GStreamer lines: version, the element, the encoders `video` can use.
pub fn gstreamer_report() -> Vec<String> {
    if let Err(e) = init_gstreamer() {
        return vec![format!("GStreamer: {e:#}")];
    }
    let has = |n: &str| gst::ElementFactory::find(n).is_some();
    let element = if has(ELEMENT) {
        "registered"
    } else {
        "NOT registered"
    };
    let codecs: Vec<String> = Codec::ALL
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.name(),
                if has(c.encoder()) { "yes" } else { "no" }
            )
        })
        .collect();
    let (major, minor, micro, _) = gst::version();
    vec![
        format!("GStreamer: {major}.{minor}.{micro} (element {ELEMENT}: {element})"),
        format!("Video encoders: {}", codecs.join(", ")),
    ]
}

/// `video`'s command line with `--crf`'s ranges read from the installed encoders and
/// `--batch-size`'s from the element.
pub fn with_encoder_ranges(cmd: clap::Command) -> clap::Command {
    if init_gstreamer().is_err() {
        return cmd;
    }
    let cmd = cmd.mut_arg("crf", |a| a.help(quality::help()));
    match quality::batch_size_help() {
        Some(h) => cmd.mut_arg("batch_size", |a| a.help(h)),
        None => cmd,
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    init_gstreamer()?;
    run_plan(Plan::new(&args)?).map(|_| ())
}

/// What a finished run decoded besides the frames it denoised.
pub(crate) struct Ran {
    /// Frames decoded ahead of the range and dropped (from the keyframe decoding began at).
    pub frames_before: u64,
    /// Frames the element took DECODE_ONLY (a segment's warm-up and lookahead): through its
    /// temporal stage only, not the network (its `stats`).
    pub frames_decode_only: u64,
}

/// Run a checked plan (`video`'s, or a job segment's).
pub(crate) fn run_plan(plan: Plan) -> anyhow::Result<Ran> {
    for name in [
        ELEMENT,
        plan.codec.encoder(),
        plan.container.muxer(),
        "parsebin",
        "decodebin",
    ] {
        if gst::ElementFactory::find(name).is_none() {
            bail!("GStreamer element {name} is missing (install the GStreamer plugin that provides it)");
        }
    }
    interrupt::install()?;
    let temp = temp::temp_output(&plan)?;
    interrupt::remove_on_exit(temp.path.clone());
    let shared = Arc::new(state::Shared {
        input: plan.input.clone(),
        mp4: mp4_tracks::read(&plan.input),
        ..Default::default()
    });
    let pipeline = gst::Pipeline::new();
    let result = pipeline::build(&pipeline, &plan, &temp.path, &shared)
        .and_then(|()| Watch::start(&pipeline, &plan, &shared))
        .and_then(|mut watch| {
            render(&mut watch)?;
            Ok(watch.outcome())
        });
    let _ = pipeline.set_state(gst::State::Null);
    report::finish(&plan, temp, &shared, result?)?;
    let stats = pipeline
        .by_name("denoise")
        .map(|e| e.property::<gst::Structure>("stats"));
    Ok(Ran {
        frames_before: shared
            .frames_before
            .load(std::sync::atomic::Ordering::Relaxed),
        frames_decode_only: stats
            .and_then(|s| s.get::<u64>("frames-decode-only").ok())
            .unwrap_or(0),
    })
}

/// How often plain progress lines are printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Show the job's events until its end.
fn render(watch: &mut Watch) -> anyhow::Result<()> {
    let mut progress = Progress::new("{bar:30} {pos}/{len} frames {msg}", None);
    let mut speed = Speed::default();
    let result = loop {
        match watch.next_event() {
            VideoEvent::Progress { done, total } => {
                show_progress(&mut progress, &mut speed, done, total)
            }
            VideoEvent::Note(n) => progress.println(&format!("note: {n}")),
            VideoEvent::Warning(w) => progress.println(&format!("warning: {w}")),
            VideoEvent::Interrupted { done } => progress.println(&format!(
                "interrupted: finishing the frames in flight and closing the file after about frame {done} \
                 (Ctrl-C again to abort)"
            )),
            VideoEvent::Eos => break Ok(()),
            VideoEvent::Error(e) => break Err(e),
        }
    };
    progress.finish();
    result
}

/// "12.5 fps, ETA 40 s", or "warming up" until the rate after the first batch is known.
fn speed_text(speed: &mut Speed, done: u64, total: Option<u64>) -> String {
    let now = std::time::Instant::now();
    let Some(fps) = speed.rate(done, now) else {
        return "warming up".to_string();
    };
    match total.and_then(|t| speed.eta(done, t, now)) {
        Some(eta) => format!("{fps:.2} fps, ETA {:.0} s", eta.as_secs_f64()),
        None => format!("{fps:.2} fps"),
    }
}

fn show_progress(progress: &mut Progress, speed: &mut Speed, done: u64, total: Option<u64>) {
    let text = speed_text(speed, done, total);
    if let Some(b) = progress.bar() {
        if let Some(t) = total {
            b.set_length(t.max(done));
        }
        b.set_position(done);
        b.set_message(text);
        return;
    }
    // Every 5 s (not before: short jobs stay quiet, so an error stays the only line).
    if done > 0 && progress.plain_due(PLAIN_EVERY) {
        let line = match total {
            Some(t) => format!("frame {done}/{t} ({}%), {text}", done * 100 / t.max(1)),
            None => format!("frame {done}, {text}"),
        };
        eprintln!("{line}");
    }
}
