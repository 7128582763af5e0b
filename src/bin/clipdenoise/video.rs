//! `clipdenoise video`: denoise a video file with a GStreamer pipeline around the statically
//! registered `clipdenoise` element:
//!
//! ```text
//! filesrc ! parsebin ─┬─ video: queue ! decodebin ! videoconvert ! clipdenoise ! videoconvert
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
//! Ctrl-C sends EOS into the head of every branch: the frames already inside the element are
//! finished, the mux finalises the file, and it is renamed into place. A second Ctrl-C aborts.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use gst::prelude::*;
use gst_video::prelude::*;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::models::ModelArgs;

/// The element this subcommand runs.
const ELEMENT: &str = "clipdenoise";

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    clipdenoise video noisy.mp4 clean.mp4\n  \
    clipdenoise video noisy.mkv clean.mkv --device cuda --batch-size 8 --precision bf16\n  \
    clipdenoise video in.mov out.webm --strength 0.7 --crf 28\n  \
    clipdenoise video noisy.mp4 clean.mp4 --force --side-by-side compare.png\n\n\
    The container follows OUTPUT's extension (.mp4, .mkv, .mov, .webm). Audio is copied unchanged when the \
    container takes it, else re-encoded (AAC for .mp4/.mov, Opus for .webm/.mkv) with a note.\n\n\
    Ctrl-C stops early and still leaves a playable OUTPUT with the frames done so far; press it twice to abort.")]
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
    /// Frames per model call (default: the element's)
    #[arg(long, short, value_parser = clap::value_parser!(u32).range(1..=256), help_heading = "Model")]
    batch_size: Option<u32>,
    /// Frames with more pixels than this run as overlapping tiles (default: the element's)
    #[arg(long, value_name = "PIXELS", help_heading = "Model")]
    max_pixels: Option<u64>,
    /// Video codec (default: h264, or vp9 for .webm)
    #[arg(long, value_enum, help_heading = "Output")]
    codec: Option<Codec>,
    /// Constant-quality level, lower is better: h264/h265 0-51 (default 20/24), vp9 0-63 (default 32)
    #[arg(long, value_parser = clap::value_parser!(u32).range(0..=63), help_heading = "Output")]
    crf: Option<u32>,
    /// Encoder speed/size trade-off for h264/h265 (x264/x265 preset names)
    #[arg(long, default_value = "medium", value_parser = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"], help_heading = "Output")]
    preset: String,
    /// Leave the audio out
    #[arg(long, help_heading = "Output")]
    no_audio: bool,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Vp9,
    Ffv1,
}

impl Codec {
    fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Vp9 => "vp9",
            Codec::Ffv1 => "ffv1",
        }
    }
    fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "x264enc",
            Codec::H265 => "x265enc",
            Codec::Vp9 => "vp9enc",
            Codec::Ffv1 => "avenc_ffv1",
        }
    }
    fn parser(self) -> Option<&'static str> {
        match self {
            Codec::H264 => Some("h264parse"),
            Codec::H265 => Some("h265parse"),
            Codec::Vp9 | Codec::Ffv1 => None,
        }
    }
    fn crf_range(self) -> Option<(u32, u32, u32)> {
        match self {
            Codec::H264 => Some((0, 51, 20)),
            Codec::H265 => Some((0, 51, 24)),
            Codec::Vp9 => Some((0, 63, 32)),
            Codec::Ffv1 => None,
        }
    }
}

/// Output containers, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Container {
    Mp4,
    Mkv,
    Mov,
    Webm,
}

impl Container {
    fn from_path(p: &Path) -> anyhow::Result<Container> {
        let ext = p
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        Ok(match ext.as_str() {
            "mp4" | "m4v" => Container::Mp4,
            "mkv" => Container::Mkv,
            "mov" => Container::Mov,
            "webm" => Container::Webm,
            _ => bail!(
                "{}: unknown output container '.{ext}' (use .mp4, .mkv, .mov or .webm)",
                p.display()
            ),
        })
    }
    fn muxer(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4mux",
            Container::Mkv => "matroskamux",
            Container::Mov => "qtmux",
            Container::Webm => "webmmux",
        }
    }
    fn ext(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4",
            Container::Mkv => "mkv",
            Container::Mov => "mov",
            Container::Webm => "webm",
        }
    }
    fn default_codec(self) -> Codec {
        match self {
            Container::Webm => Codec::Vp9,
            _ => Codec::H264,
        }
    }
    fn takes(self, codec: Codec) -> bool {
        match self {
            Container::Mkv => true,
            Container::Mp4 | Container::Mov => codec != Codec::Ffv1,
            Container::Webm => codec == Codec::Vp9,
        }
    }
    /// Audio encoders for a stream the container cannot take as is, best first.
    fn audio_encoders(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Container::Mp4 | Container::Mov => &[
                ("avenc_aac", "AAC"),
                ("voaacenc", "AAC"),
                ("fdkaacenc", "AAC"),
                ("lamemp3enc", "MP3"),
            ],
            Container::Webm | Container::Mkv => &[("opusenc", "Opus"), ("vorbisenc", "Vorbis")],
        }
    }
}

/// Initialise GStreamer and register the element statically (no GST_PLUGIN_PATH needed).
pub(crate) fn init_gstreamer() -> anyhow::Result<()> {
    gst::init().context("cannot initialise GStreamer")?;
    static REGISTER: std::sync::Once = std::sync::Once::new();
    REGISTER.call_once(register_element);
    Ok(())
}

fn register_element() {
    // A failure shows up as the element missing, which `run` and `info` report.
    let _ = crate::element::register(None);
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
    let codecs: Vec<String> = [Codec::H264, Codec::H265, Codec::Vp9, Codec::Ffv1]
        .iter()
        .map(|c| {
            format!(
                "{} {}",
                c.name(),
                if has(c.encoder()) { "yes" } else { "no" }
            )
        })
        .collect();
    vec![
        {
            let (major, minor, micro, _) = gst::version();
            format!("GStreamer: {major}.{minor}.{micro} (element {ELEMENT}: {element})")
        },
        format!("Video encoders: {}", codecs.join(", ")),
    ]
}

/// State shared between the pad callbacks (streaming threads) and the main loop.
#[derive(Default)]
struct Shared {
    /// Frames into the element and out of it (into the encoder).
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    /// End (PTS + duration) of the latest frame into the element; of the latest audio buffer.
    video_start: Mutex<Option<gst::ClockTime>>,
    video_end: Mutex<Option<gst::ClockTime>>,
    audio_end: Mutex<Option<gst::ClockTime>>,
    /// Frame rate and size of the decoded video.
    fps: Mutex<Option<gst::Fraction>>,
    size: Mutex<Option<(i32, i32)>>,
    video_seen: AtomicBool,
    had_audio: AtomicBool,
    input: PathBuf,
    /// Set by the callbacks: the first problem found (the main loop reports it).
    error: Mutex<Option<String>>,
    /// Notes for the user (audio re-encoded, streams skipped).
    notes: Mutex<Vec<String>>,
    /// What happened to each audio stream, for the summary.
    audio: Mutex<Vec<String>>,
    /// The first element of each branch: where Ctrl-C sends EOS.
    heads: Mutex<Vec<gst::Pad>>,
    /// Before/after frames for --side-by-side.
    capture: Mutex<Capture>,
}

#[derive(Default)]
struct Capture {
    /// PTS from which the "before" frame is taken (the middle of the clip), once known.
    target: Option<gst::ClockTime>,
    first_before: Option<gst::Sample>,
    first_after: Option<gst::Sample>,
    before: Option<gst::Sample>,
    after: Option<gst::Sample>,
}

impl Shared {
    fn fail(&self, msg: String) {
        let mut e = self.error.lock().unwrap();
        if e.is_none() {
            *e = Some(msg);
        }
    }
    fn note(&self, msg: String) {
        self.notes.lock().unwrap().push(msg);
    }
}

/// The temporary output next to OUTPUT; removed on drop unless it was renamed into place.
struct TempOutput {
    path: PathBuf,
    created_dir: Option<PathBuf>,
    keep: bool,
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
            if let Some(d) = &self.created_dir {
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}

/// Ctrl-C presses (or SIGTERM/SIGHUP, which take the same path): 1 = finish the file,
/// 2 = abort (the main loop stops the pipeline), 3 = exit at once (for a pipeline that does
/// not stop).
static INTERRUPTS: AtomicU8 = AtomicU8::new(0);
/// The temporary output, for the third Ctrl-C.
static TEMP_PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

fn install_ctrlc() -> anyhow::Result<()> {
    ctrlc::set_handler(|| {
        if INTERRUPTS.fetch_add(1, Ordering::SeqCst) >= 2 {
            if let Some(p) = TEMP_PATH.get() {
                let _ = std::fs::remove_file(p);
            }
            eprintln!("\naborted: no output written");
            std::process::exit(130);
        }
    })
    .context("cannot install the Ctrl-C/SIGTERM handler")
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let container = Container::from_path(&args.output)?;
    let codec = args.codec.unwrap_or(container.default_codec());
    check_paths(&args)?;
    if !container.takes(codec) {
        bail!(
            "{} video cannot go into .{} (use --codec {} or another container)",
            codec.name(),
            container.ext(),
            container.default_codec().name()
        );
    }
    let crf = match (codec.crf_range(), args.crf) {
        (Some((lo, hi, _)), Some(c)) if c < lo || c > hi => {
            bail!("--crf {c} is outside {lo}-{hi} for {}", codec.name())
        }
        (Some(_), Some(c)) => Some(c),
        (Some((_, _, d)), None) => Some(d),
        (None, Some(_)) => bail!("--crf does not apply to {} (it is lossless)", codec.name()),
        (None, None) => None,
    };
    // Device and model are checked here so their errors are one clear line before any GStreamer.
    let (_, device) = args.model.device()?;
    let device = match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let source = args.model.source()?;
    if let clipdenoise::weights::ModelSource::File(_) = &source {
        source
            .load(tch::Device::Cpu)
            .with_context(|| format!("cannot load model {source}"))?;
    }

    init_gstreamer()?;
    for name in [
        ELEMENT,
        codec.encoder(),
        container.muxer(),
        "parsebin",
        "decodebin",
    ] {
        if gst::ElementFactory::find(name).is_none() {
            bail!("GStreamer element {name} is missing (install the GStreamer plugin that provides it)");
        }
    }

    install_ctrlc()?;
    let temp = temp_output(&args.output, container)?;
    let _ = TEMP_PATH.set(temp.path.clone());
    let shared = Arc::new(Shared {
        input: args.input.clone(),
        ..Shared::default()
    });
    let pipeline = gst::Pipeline::new();
    let result = build(
        &pipeline, &args, &temp.path, container, codec, crf, &device, &source, &shared,
    )
    .and_then(|()| run_pipeline(&pipeline, &args, &shared));
    let _ = pipeline.set_state(gst::State::Null);
    let outcome = result?;
    finish(&args, temp, &shared, container, codec, outcome)
}

/// How the pipeline ended.
struct Outcome {
    interrupted: bool,
    elapsed: Duration,
    duration: Option<gst::ClockTime>,
}

fn check_paths(args: &Args) -> anyhow::Result<()> {
    let input = &args.input;
    match std::fs::metadata(input) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file", input.display())
        }
        Err(e) => bail!("{}: {e}", input.display()),
        Ok(m) if m.is_dir() => bail!("{}: is a directory, not a video file", input.display()),
        Ok(_) => {}
    }
    if crate::image::same_file(input, &args.output) || input == &args.output {
        bail!(
            "{}: OUTPUT is the INPUT file itself; choose another output name",
            args.output.display()
        );
    }
    if args.output.is_dir() {
        bail!(
            "{}: is a directory; give an output file name",
            args.output.display()
        );
    }
    if args.output.exists() && !args.force {
        bail!(
            "{} already exists (use --force to overwrite)",
            args.output.display()
        );
    }
    if let Some(png) = &args.side_by_side {
        if clipdenoise::imageio::Format::from_path(png).is_none() {
            bail!(
                "{}: --side-by-side needs an image file name (.png)",
                png.display()
            );
        }
        if crate::image::same_file(input, png) || png == &args.output {
            bail!(
                "{}: --side-by-side would overwrite INPUT or OUTPUT",
                png.display()
            );
        }
        if png.exists() && !args.force {
            bail!(
                "{} already exists (use --force to overwrite)",
                png.display()
            );
        }
    }
    Ok(())
}

/// Create the temporary file next to OUTPUT (and OUTPUT's directory if missing): this is where
/// an unwritable destination shows up, before anything runs.
fn temp_output(output: &Path, container: Container) -> anyhow::Result<TempOutput> {
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut created_dir = None;
    if !dir.exists() {
        // Remember the top-most directory created, to remove it again on failure.
        let mut top = dir.clone();
        while let Some(p) = top
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && !p.exists())
        {
            top = p.to_path_buf();
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the output directory {}", dir.display()))?;
        created_dir = Some(top);
    }
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.join(format!(
        ".{name}.{}.part.{}",
        std::process::id(),
        container.ext()
    ));
    let temp = TempOutput {
        path,
        created_dir,
        keep: false,
    };
    if let Err(e) = std::fs::File::create(&temp.path) {
        // Dropping `temp` removes the directories created above.
        bail!("cannot write to {}: {e}", dir.display());
    }
    Ok(temp)
}

fn make(factory: &str, name: Option<&str>) -> anyhow::Result<gst::Element> {
    let b = gst::ElementFactory::make(factory);
    let b = match name {
        Some(n) => b.name(n),
        None => b,
    };
    b.build().map_err(|_| {
        anyhow!("GStreamer element {factory} is missing (install the plugin that provides it)")
    })
}

/// Set a property from its string form, if the element has it (enums by nick, numbers, ...).
fn set_prop(e: &gst::Element, name: &str, value: &str) -> anyhow::Result<()> {
    let pspec = e.find_property(name).ok_or_else(|| {
        anyhow!(
            "element {} has no property {name}",
            e.factory().map(|f| f.name()).unwrap_or_default()
        )
    })?;
    let v = gst::glib::Value::deserialize_with_pspec(value, &pspec)
        .map_err(|_| anyhow!("invalid value '{value}' for {name}"))?;
    e.set_property_from_value(name, &v);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn build(
    pipeline: &gst::Pipeline,
    args: &Args,
    temp: &Path,
    container: Container,
    codec: Codec,
    crf: Option<u32>,
    device: &str,
    source: &clipdenoise::weights::ModelSource,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let src = make("filesrc", Some("src"))?;
    src.set_property("location", args.input.to_string_lossy().as_ref());
    let parse = make("parsebin", Some("parse"))?;
    let mux = make(container.muxer(), Some("mux"))?;
    let sink = make("filesink", Some("sink"))?;
    sink.set_property("location", temp.to_string_lossy().as_ref());
    pipeline.add_many([&src, &parse, &mux, &sink])?;
    src.link(&parse)?;
    mux.link(&sink)?;

    // The video chain after the decoder, up to the mux.
    let pre = make("videoconvert", Some("pre"))?;
    let element = make(ELEMENT, Some("denoise"))?;
    let model = match source {
        clipdenoise::weights::ModelSource::Default => "default".to_string(),
        clipdenoise::weights::ModelSource::File(p) => p.to_string_lossy().into_owned(),
    };
    set_prop(&element, "model", &model)?;
    set_prop(&element, "device", device)?;
    set_prop(
        &element,
        "precision",
        clipdenoise::inference::Precision::from(args.model.precision).as_str(),
    )?;
    set_prop(&element, "strength", &args.model.strength.to_string())?;
    if element.find_property("qos").is_some() {
        set_prop(&element, "qos", "false")?; // offline: never drop a frame
    }
    if let Some(b) = args.batch_size {
        set_prop(&element, "batch-size", &b.to_string())?;
    }
    if let Some(p) = args.max_pixels {
        set_prop(&element, "max-pixels", &p.to_string())?;
    }
    let post = make("videoconvert", Some("post"))?;
    let filter = make("capsfilter", Some("encfilter"))?;
    if codec != Codec::Ffv1 {
        // 4:2:0 8-bit: what every player decodes.
        filter.set_property(
            "caps",
            gst::Caps::builder("video/x-raw")
                .field("format", "I420")
                .build(),
        );
    }
    let enc = make(codec.encoder(), Some("encoder"))?;
    configure_encoder(&enc, codec, crf, &args.preset)?;
    let mut chain = vec![
        pre.clone(),
        element.clone(),
        post.clone(),
        filter,
        enc.clone(),
    ];
    if let Some(p) = codec.parser() {
        chain.push(make(p, None)?);
    }
    let vqueue = make("queue", Some("vmuxqueue"))?;
    chain.push(vqueue.clone());
    pipeline.add_many(&chain)?;
    gst::Element::link_many(&chain)?;
    let mux_video = mux
        .request_pad_simple("video_%u")
        .ok_or_else(|| anyhow!("{} has no video input", container.muxer()))?;
    vqueue
        .static_pad("src")
        .expect("queue has src")
        .link(&mux_video)?;

    install_probes(&pre, &post, shared, args.side_by_side.is_some());

    let weak_pipeline = pipeline.downgrade();
    let sh = shared.clone();
    let no_audio = args.no_audio;
    let pre_sink = pre.static_pad("sink").expect("videoconvert has sink");
    parse.connect_pad_added(move |_, pad| {
        let Some(pipeline) = weak_pipeline.upgrade() else {
            return;
        };
        if let Err(e) = on_stream(&pipeline, pad, &pre_sink, &mux, container, no_audio, &sh) {
            sh.fail(format!("{e:#}"));
            let _ = pipeline.post_message(gst::message::Application::new(
                gst::Structure::new_empty("cli-error"),
            ));
        }
    });
    let sh = shared.clone();
    let weak_pipeline = pipeline.downgrade();
    parse.connect_no_more_pads(move |_| {
        if let Some(p) = weak_pipeline.upgrade() {
            check_video_seen(&p, &sh);
        }
    });
    Ok(())
}

fn configure_encoder(
    enc: &gst::Element,
    codec: Codec,
    crf: Option<u32>,
    preset: &str,
) -> anyhow::Result<()> {
    match codec {
        Codec::H264 => {
            set_prop(enc, "pass", "qual")?;
            set_prop(enc, "quantizer", &crf.unwrap_or(20).to_string())?;
            set_prop(enc, "speed-preset", preset)?;
        }
        Codec::H265 => {
            set_prop(enc, "speed-preset", preset)?;
            set_prop(enc, "option-string", &format!("crf={}", crf.unwrap_or(24)))?;
        }
        Codec::Vp9 => {
            // Constrained quality with a bitrate cap high enough that the quality level rules.
            set_prop(enc, "end-usage", "cq")?;
            set_prop(enc, "target-bitrate", "50000000")?;
            set_prop(enc, "cq-level", &crf.unwrap_or(32).to_string())?;
            set_prop(enc, "cpu-used", "4")?;
            set_prop(enc, "row-mt", "true")?;
            let threads = std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .min(16);
            set_prop(enc, "threads", &threads.to_string())?;
        }
        Codec::Ffv1 => {}
    }
    Ok(())
}

/// Count frames, remember stream ends and frame rate, and capture the side-by-side frames.
fn install_probes(pre: &gst::Element, post: &gst::Element, shared: &Arc<Shared>, capture: bool) {
    let sh = shared.clone();
    let pre_sink = pre.static_pad("sink").expect("videoconvert has sink");
    pre_sink.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buf)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let n = sh.frames_in.fetch_add(1, Ordering::Relaxed);
        if let Some(pts) = buf.pts() {
            let end = pts + buf.duration().unwrap_or(gst::ClockTime::ZERO);
            let mut e = sh.video_end.lock().unwrap();
            *e = Some(e.map_or(end, |v| v.max(end)));
            let mut s = sh.video_start.lock().unwrap();
            *s = Some(s.map_or(pts, |v| v.min(pts)));
        }
        if n == 0 {
            if let Some(s) = pad
                .current_caps()
                .as_ref()
                .and_then(|c| c.structure(0).map(|s| s.to_owned()))
            {
                *sh.fps.lock().unwrap() = s
                    .get::<gst::Fraction>("framerate")
                    .ok()
                    .filter(|f| f.numer() > 0);
                if let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) {
                    *sh.size.lock().unwrap() = Some((w, h));
                }
            }
        }
        if capture {
            let mut c = sh.capture.lock().unwrap();
            if n == 0 {
                c.target = pad
                    .peer_query_duration::<gst::ClockTime>()
                    .map(|d| d / 2)
                    .or(Some(gst::ClockTime::ZERO));
                c.first_before = sample_of(pad, buf);
            }
            if c.before.is_none() && c.target.is_some_and(|t| buf.pts().is_some_and(|p| p >= t)) {
                c.before = sample_of(pad, buf);
            }
        }
        gst::PadProbeReturn::Ok
    });
    let sh = shared.clone();
    let post_src = post.static_pad("src").expect("videoconvert has src");
    post_src.add_probe(gst::PadProbeType::BUFFER, move |pad, info| {
        let Some(gst::PadProbeData::Buffer(buf)) = &info.data else {
            return gst::PadProbeReturn::Ok;
        };
        let n = sh.frames_out.fetch_add(1, Ordering::Relaxed);
        if capture {
            let mut c = sh.capture.lock().unwrap();
            if n == 0 {
                c.first_after = sample_of(pad, buf);
            }
            let want = c
                .before
                .as_ref()
                .and_then(|s| s.buffer().and_then(|b| b.pts()));
            if c.after.is_none() && want.is_some() && buf.pts() == want {
                c.after = sample_of(pad, buf);
            }
        }
        gst::PadProbeReturn::Ok
    });
}

/// A deep copy of a buffer with the pad's caps (so no pool buffer stays borrowed).
fn sample_of(pad: &gst::Pad, buf: &gst::Buffer) -> Option<gst::Sample> {
    let caps = pad.current_caps()?;
    let copy = buf.copy_deep().ok()?;
    Some(gst::Sample::builder().buffer(&copy).caps(&caps).build())
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
    let _ = pipeline.post_message(gst::message::Application::new(gst::Structure::new_empty(
        "cli-error",
    )));
}

/// Link one of parsebin's streams: the first video stream to the denoising chain, audio to the
/// mux (copied or re-encoded), anything else to a fakesink.
fn on_stream(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    pre_sink: &gst::Pad,
    mux: &gst::Element,
    container: Container,
    no_audio: bool,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let caps = pad
        .current_caps()
        .or_else(|| Some(pad.query_caps(None)))
        .expect("caps");
    let name = caps
        .structure(0)
        .map(|s| s.name().to_string())
        .unwrap_or_default();
    let kind = name.split('/').next().unwrap_or("");
    shared.had_audio.fetch_or(kind == "audio", Ordering::SeqCst);
    if kind != "video" || shared.video_seen.load(Ordering::SeqCst) {
        let weak = pipeline.downgrade();
        let sh = shared.clone();
        pad.add_probe(gst::PadProbeType::BUFFER, move |_, _| {
            if let Some(p) = weak.upgrade() {
                check_video_seen(&p, &sh);
            }
            gst::PadProbeReturn::Remove
        });
    }
    if kind == "video" && !shared.video_seen.swap(true, Ordering::SeqCst) {
        let queue = make("queue", None)?;
        let dec = make("decodebin", None)?;
        pipeline.add_many([&queue, &dec])?;
        queue.link(&dec)?;
        let target = pre_sink.clone();
        let sh = shared.clone();
        dec.connect_pad_added(move |_, dpad| {
            let is_video = dpad
                .current_caps()
                .and_then(|c| c.structure(0).map(|s| s.name().starts_with("video/")))
                .unwrap_or(false);
            if is_video && !target.is_linked() {
                if let Err(e) = dpad.link(&target) {
                    sh.fail(format!("cannot link the decoded video: {e}"));
                }
            }
        });
        for e in [&queue, &dec] {
            e.sync_state_with_parent()?;
        }
        pad.link(&queue.static_pad("sink").expect("queue has sink"))?;
        shared.heads.lock().unwrap().push(pre_sink.clone());
        return Ok(());
    }
    if kind == "audio" && !no_audio {
        return link_audio(pipeline, pad, &caps, &name, mux, container, shared);
    }
    // A second video stream, subtitles, data, or audio with --no-audio: consume and drop.
    let sink = make("fakesink", None)?;
    sink.set_property("sync", false);
    sink.set_property("async", false);
    pipeline.add(&sink)?;
    sink.sync_state_with_parent()?;
    pad.link(&sink.static_pad("sink").expect("fakesink has sink"))?;
    if kind == "video" {
        shared.note(format!(
            "only the first video stream is denoised; another one ({name}) is left out"
        ));
    } else if kind != "audio" {
        shared.note(format!("a {name} stream is left out"));
    }
    Ok(())
}

fn link_audio(
    pipeline: &gst::Pipeline,
    pad: &gst::Pad,
    caps: &gst::Caps,
    name: &str,
    mux: &gst::Element,
    container: Container,
    shared: &Arc<Shared>,
) -> anyhow::Result<()> {
    let tmpl = mux
        .pad_template("audio_%u")
        .ok_or_else(|| anyhow!("{} takes no audio", container.muxer()))?;
    let label = audio_label(caps, name);
    // Audio waits in this queue while the (slower) video catches up in the mux: no limits but
    // time, which the demuxer's interleaving keeps small.
    let queue = make("queue", None)?;
    queue.set_property("max-size-buffers", 0u32);
    queue.set_property("max-size-bytes", 0u32);
    queue.set_property("max-size-time", 60 * gst::ClockTime::SECOND.nseconds());
    let mut chain = vec![queue.clone()];
    let copy = tmpl.caps().can_intersect(caps);
    let mut dec = None;
    if copy {
        shared.audio.lock().unwrap().push(format!("{label} copied"));
    } else {
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
        shared.note(format!(
            "the audio ({label}) cannot go into .{} unchanged: re-encoding it to {enc_label}",
            container.ext()
        ));
        shared
            .audio
            .lock()
            .unwrap()
            .push(format!("{label} re-encoded to {enc_label}"));
        let d = make("decodebin", None)?;
        let conv = make("audioconvert", None)?;
        let res = make("audioresample", None)?;
        let enc = make(enc_name, None)?;
        pipeline.add_many([&d, &conv, &res, &enc])?;
        gst::Element::link_many([&conv, &res, &enc])?;
        let conv_sink = conv.static_pad("sink").expect("audioconvert has sink");
        d.connect_pad_added(move |_, dpad| {
            if !conv_sink.is_linked() {
                let _ = dpad.link(&conv_sink);
            }
        });
        chain.push(d.clone());
        dec = Some((d, conv, res, enc));
    }
    pipeline.add(&queue)?;
    let mux_pad = mux
        .request_pad_simple("audio_%u")
        .ok_or_else(|| anyhow!("{} cannot take another audio stream", container.muxer()))?;
    match &dec {
        None => {
            queue
                .static_pad("src")
                .expect("queue has src")
                .link(&mux_pad)?;
        }
        Some((d, _, _, enc)) => {
            queue.link(d)?;
            enc.static_pad("src")
                .expect("encoder has src")
                .link(&mux_pad)?;
        }
    }
    let sh = shared.clone();
    let qsink = queue.static_pad("sink").expect("queue has sink");
    qsink.add_probe(gst::PadProbeType::BUFFER, move |_, info| {
        if let Some(gst::PadProbeData::Buffer(buf)) = &info.data {
            if let Some(pts) = buf.pts() {
                let end = pts + buf.duration().unwrap_or(gst::ClockTime::ZERO);
                let mut e = sh.audio_end.lock().unwrap();
                *e = Some(e.map_or(end, |v| v.max(end)));
            }
        }
        gst::PadProbeReturn::Ok
    });
    if let Some((d, conv, res, enc)) = &dec {
        for e in [d, conv, res, enc] {
            e.sync_state_with_parent()?;
        }
    }
    queue.sync_state_with_parent()?;
    pad.link(&qsink)?;
    shared.heads.lock().unwrap().push(qsink);
    Ok(())
}

/// "AAC", "Opus", ... from caps.
fn audio_label(caps: &gst::Caps, name: &str) -> String {
    let s = caps.structure(0);
    let int = |f: &str| s.and_then(|s| s.get::<i32>(f).ok());
    match name {
        "audio/mpeg" if int("mpegversion") == Some(1) => "MP3".into(),
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

fn run_pipeline(
    pipeline: &gst::Pipeline,
    args: &Args,
    shared: &Arc<Shared>,
) -> anyhow::Result<Outcome> {
    let bus = pipeline.bus().expect("a pipeline has a bus");
    // READY first: the element loads the model here, so a failure is reported before streaming.
    if pipeline.set_state(gst::State::Ready).is_err() {
        return Err(bus_error(&bus, args).unwrap_or_else(|| anyhow!("the pipeline cannot start")));
    }
    if pipeline.set_state(gst::State::Playing).is_err() {
        return Err(bus_error(&bus, args).unwrap_or_else(|| anyhow!("the pipeline cannot start")));
    }
    let start = Instant::now();
    let mut progress = Progress::new();
    let mut duration: Option<gst::ClockTime> = None;
    let mut interrupted = false;
    loop {
        if let Some(e) = shared.error.lock().unwrap().take() {
            progress.finish();
            return Err(anyhow!(e));
        }
        for n in shared.notes.lock().unwrap().drain(..) {
            progress.println(&format!("note: {n}"));
        }
        match INTERRUPTS.load(Ordering::SeqCst) {
            0 => {}
            1 if !interrupted => {
                interrupted = true;
                let done = shared.frames_out.load(Ordering::Relaxed);
                progress.println(&format!(
                    "interrupted: finishing the frames in flight and closing the file after about frame {done} \
                     (Ctrl-C again to abort)"
                ));
                let heads = shared.heads.lock().unwrap().clone();
                if heads.is_empty() {
                    INTERRUPTS.store(2, Ordering::SeqCst);
                    continue;
                }
                // Sending blocks while a streaming thread holds the pad; do it off the main loop.
                std::thread::spawn(move || {
                    for p in heads {
                        p.send_event(gst::event::Eos::new());
                    }
                });
            }
            1 => {}
            _ => {
                progress.finish();
                bail!("aborted: no output written");
            }
        }
        if duration.is_none() {
            duration = pipeline.query_duration::<gst::ClockTime>();
        }
        let fps = *shared.fps.lock().unwrap();
        let total = match (duration, fps) {
            (Some(d), Some(f)) => Some(
                (d.nseconds() as u128 * f.numer() as u128 / (f.denom() as u128 * 1_000_000_000))
                    .max(1) as u64,
            ),
            _ => None,
        };
        progress.update(
            shared.frames_out.load(Ordering::Relaxed),
            total,
            start.elapsed(),
        );
        let Some(msg) = bus.timed_pop(gst::ClockTime::from_mseconds(100)) else {
            continue;
        };
        use gst::MessageView;
        match msg.view() {
            MessageView::Eos(_) => break,
            MessageView::Error(_) => {
                progress.finish();
                let own = shared.error.lock().unwrap().take();
                return Err(own
                    .map(|e| anyhow!(e))
                    .unwrap_or_else(|| error_line(&msg, args)));
            }
            MessageView::Warning(w) => {
                let text = w.error().to_string();
                if !text.is_empty() {
                    progress.println(&format!(
                        "warning: {}",
                        with_detail(&text, w.debug().as_deref())
                    ));
                }
            }
            _ => {}
        }
    }
    progress.finish();
    Ok(Outcome {
        interrupted,
        elapsed: start.elapsed(),
        duration,
    })
}

/// The first error on the bus, as one line.
fn bus_error(bus: &gst::Bus, args: &Args) -> Option<anyhow::Error> {
    while let Some(msg) = bus.pop() {
        if let gst::MessageView::Error(_) = msg.view() {
            return Some(error_line(&msg, args));
        }
    }
    None
}

/// `text (detail)`, the detail being the last line of a message's debug string (where elements
/// put the specific cause), on one line.
fn with_detail(text: &str, debug: Option<&str>) -> String {
    let text = one_line(text);
    let detail = debug
        .and_then(|d| d.lines().last())
        .map(one_line)
        .unwrap_or_default();
    if detail.is_empty()
        || detail.contains(".rs(")
        || detail.contains(".c(")
        || detail.starts_with('/')
    {
        text
    } else {
        format!("{} ({detail})", text.trim_end_matches('.'))
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Turn a bus error into one line that names the problem (and the file, when it is the input's).
fn error_line(msg: &gst::Message, args: &Args) -> anyhow::Error {
    let gst::MessageView::Error(err) = msg.view() else {
        return anyhow!("pipeline error");
    };
    let e = err.error();
    let text = one_line(&e.to_string());
    let text = text.trim_end_matches('.');
    let detailed = with_detail(text, err.debug().as_deref());
    let src = msg.src().map(|s| s.name().to_string()).unwrap_or_default();
    let input = args.input.display();
    if e.matches(gst::StreamError::TypeNotFound) || e.matches(gst::StreamError::WrongType) {
        return anyhow!("{input}: not a media file GStreamer can read ({text})");
    }
    if e.matches(gst::CoreError::MissingPlugin) || e.matches(gst::StreamError::CodecNotFound) {
        return anyhow!("{input}: no decoder for one of its streams ({text}); install the GStreamer plugin for it");
    }
    match src.as_str() {
        "sink" => anyhow!("cannot write {}: {detailed}", args.output.display()),
        "denoise" => anyhow!("{ELEMENT}: {detailed}"),
        "encoder" | "encfilter" | "mux" | "pre" | "post" | "vmuxqueue" => {
            anyhow!("{src}: {detailed}")
        }
        _ => anyhow!("{input}: cannot read this file; it may be damaged or truncated ({detailed})"),
    }
}

fn finish(
    args: &Args,
    mut temp: TempOutput,
    shared: &Shared,
    container: Container,
    codec: Codec,
    outcome: Outcome,
) -> anyhow::Result<()> {
    let frames_in = shared.frames_in.load(Ordering::Relaxed);
    let frames_out = shared.frames_out.load(Ordering::Relaxed);
    if frames_out == 0 {
        if outcome.interrupted {
            bail!("interrupted before the first frame was done: no output written");
        }
        bail!("{}: no video frames could be decoded", args.input.display());
    }
    let video_end = shared
        .video_end
        .lock()
        .unwrap()
        .unwrap_or(gst::ClockTime::ZERO);
    if !outcome.interrupted {
        // A file cut short often ends without an error: its streams stop before the duration
        // its header announces.
        let stream_end = shared
            .audio_end
            .lock()
            .unwrap()
            .map_or(video_end, |a| a.max(video_end));
        if let Some(d) = outcome.duration {
            let slack = gst::ClockTime::from_mseconds(500).max(d / 20);
            if stream_end + slack < d {
                bail!(
                    "{}: the file is truncated or damaged: its streams end at {:.2} s but it says it lasts {:.2} s",
                    args.input.display(),
                    stream_end.seconds_f64(),
                    d.seconds_f64()
                );
            }
        }
    }
    if let Some(png) = &args.side_by_side {
        write_side_by_side(png, &shared.capture.lock().unwrap())
            .with_context(|| format!("cannot write the side-by-side image {}", png.display()))?;
    }
    std::fs::rename(&temp.path, &args.output)
        .with_context(|| format!("cannot move the result to {}", args.output.display()))?;
    temp.keep = true;
    if let Some(png) = &args.side_by_side {
        eprintln!("before/after: {}", png.display());
    }
    if frames_in != frames_out {
        eprintln!("warning: {frames_in} frames went into the denoiser but {frames_out} came out");
    }
    let size = shared
        .size
        .lock()
        .unwrap()
        .map(|(w, h)| format!("{w}x{h}, "))
        .unwrap_or_default();
    let audio = shared.audio.lock().unwrap().join(", ");
    let audio = if audio.is_empty() {
        "no audio".to_string()
    } else {
        format!("audio: {audio}")
    };
    let secs = outcome.elapsed.as_secs_f64();
    let video_start = shared
        .video_start
        .lock()
        .unwrap()
        .unwrap_or(gst::ClockTime::ZERO);
    let length = video_end.saturating_sub(video_start);
    if outcome.interrupted {
        eprintln!(
            "stopped early: {} holds the first {frames_out} frames ({:.2} s{}) and is playable",
            args.output.display(),
            length.seconds_f64(),
            outcome
                .duration
                .map(|d| format!(" of {:.2} s", d.seconds_f64()))
                .unwrap_or_default()
        );
        std::process::exit(130);
    }
    eprintln!(
        "wrote {}: {frames_out} frames, {size}{:.2} s, {} in .{}, {audio}; took {:.1} s ({:.2} fps)",
        args.output.display(),
        length.seconds_f64(),
        codec.name(),
        container.ext(),
        secs,
        frames_out as f64 / secs.max(1e-9)
    );
    Ok(())
}

/// RGB bytes (tightly packed) of a captured sample.
fn rgb_of(sample: &gst::Sample) -> anyhow::Result<(usize, usize, Vec<u8>)> {
    let caps = sample.caps().context("frame without caps")?;
    let info = gst_video::VideoInfo::from_caps(caps).context("bad video caps")?;
    let rgb_caps =
        gst_video::VideoInfo::builder(gst_video::VideoFormat::Rgb, info.width(), info.height())
            .build()
            .context("bad frame size")?
            .to_caps()?;
    let rgb = gst_video::convert_sample(sample, &rgb_caps, Some(gst::ClockTime::from_seconds(10)))
        .map_err(|e| anyhow!("colour conversion failed: {e}"))?;
    let rgb_info = gst_video::VideoInfo::from_caps(rgb.caps().context("no caps")?)?;
    let buf = rgb.buffer_owned().context("no buffer")?;
    let frame = gst_video::VideoFrame::from_buffer_readable(buf, &rgb_info)
        .map_err(|_| anyhow!("unmappable frame"))?;
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let stride = frame.plane_stride()[0] as usize;
    let data = frame.plane_data(0)?;
    let mut out = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        out.extend_from_slice(&data[y * stride..y * stride + w * 3]);
    }
    Ok((w, h, out))
}

/// Before | gap | after, as an 8-bit PNG.
fn write_side_by_side(path: &Path, c: &Capture) -> anyhow::Result<()> {
    let (before, after) = match (&c.before, &c.after) {
        (Some(b), Some(a)) => (b, a),
        _ => match (&c.first_before, &c.first_after) {
            (Some(b), Some(a)) => (b, a),
            _ => bail!("no frame was captured"),
        },
    };
    let (w, h, b) = rgb_of(before)?;
    let (w2, h2, a) = rgb_of(after)?;
    if (w, h) != (w2, h2) {
        bail!("the denoised frame is {w2}x{h2}, the input {w}x{h}");
    }
    let gap = 8usize;
    let ow = 2 * w + gap;
    let mut out = vec![255u8; ow * h * 3];
    for y in 0..h {
        out[y * ow * 3..y * ow * 3 + w * 3].copy_from_slice(&b[y * w * 3..(y + 1) * w * 3]);
        let o = y * ow * 3 + (w + gap) * 3;
        out[o..o + w * 3].copy_from_slice(&a[y * w * 3..(y + 1) * w * 3]);
    }
    let scale = crate::label::scale_for(h);
    crate::label::draw(&mut out, ow, h, scale, scale, "noisy", scale);
    crate::label::draw(
        &mut out,
        ow,
        h,
        w + gap + scale,
        scale,
        "clipdenoise",
        scale,
    );
    if let Some(d) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(d)?;
    }
    let img = clipdenoise::imageio::RgbImage {
        width: ow,
        height: h,
        samples: clipdenoise::imageio::Samples::U8(out),
    };
    clipdenoise::imageio::write(path, &img, 95)?;
    Ok(())
}

/// How often plain progress lines are printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// A progress bar on a terminal, plain lines every [`PLAIN_EVERY`] otherwise.
struct Progress {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Progress {
    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            b.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} frames {msg} ETA {eta}")
                    .expect("valid template"),
            );
            b
        });
        Progress {
            bar,
            last_line: Instant::now(),
        }
    }

    fn update(&mut self, done: u64, total: Option<u64>, elapsed: Duration) {
        let fps = done as f64 / elapsed.as_secs_f64().max(1e-9);
        if let Some(b) = &self.bar {
            if let Some(t) = total {
                b.set_length(t.max(done));
            }
            b.set_position(done);
            b.set_message(format!("{fps:.2} fps"));
            return;
        }
        // Every 5 s (not before: short jobs stay quiet, so an error stays the only line).
        if done > 0 && self.last_line.elapsed() >= PLAIN_EVERY {
            self.last_line = Instant::now();
            let line = match total {
                Some(t) => {
                    let eta = t.saturating_sub(done) as f64 / fps.max(1e-9);
                    format!(
                        "frame {done}/{t} ({}%), {fps:.2} fps, ETA {eta:.0} s",
                        done * 100 / t.max(1)
                    )
                }
                None => format!("frame {done}, {fps:.2} fps"),
            };
            eprintln!("{line}");
        }
    }

    fn println(&self, s: &str) {
        match &self.bar {
            Some(b) => b.suspend(|| eprintln!("{s}")),
            None => eprintln!("{s}"),
        }
    }

    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
