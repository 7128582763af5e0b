//! What `video` will do, checked once before the pipeline is built: the paths, the container
//! and the codec, the encoder's quality (in the range the encoder accepts), and the element's
//! properties as typed values.

use std::path::{Path, PathBuf};

use anyhow::bail;
use clipdenoise::inference::Precision;
use clipdenoise::weights::ModelSource;

use super::range::Range;
use super::{quality, Args};
use crate::paths;

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    Vp9,
    Ffv1,
}

impl Codec {
    pub const ALL: [Codec; 4] = [Codec::H264, Codec::H265, Codec::Vp9, Codec::Ffv1];

    pub fn name(self) -> &'static str {
        match self {
            Codec::H264 => "h264",
            Codec::H265 => "h265",
            Codec::Vp9 => "vp9",
            Codec::Ffv1 => "ffv1",
        }
    }
    pub fn encoder(self) -> &'static str {
        match self {
            Codec::H264 => "x264enc",
            Codec::H265 => "x265enc",
            Codec::Vp9 => "vp9enc",
            Codec::Ffv1 => "avenc_ffv1",
        }
    }
    pub fn parser(self) -> Option<&'static str> {
        match self {
            Codec::H264 => Some("h264parse"),
            Codec::H265 => Some("h265parse"),
            // Gives the caps fields (profile, chroma, depth) that mp4mux and qtmux need.
            Codec::Vp9 => Some("vp9parse"),
            Codec::Ffv1 => None,
        }
    }
}

/// Output containers, by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
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
    pub fn muxer(self) -> &'static str {
        match self {
            Container::Mp4 => "mp4mux",
            Container::Mkv => "matroskamux",
            Container::Mov => "qtmux",
            Container::Webm => "webmmux",
        }
    }
    pub fn ext(self) -> &'static str {
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
    const ALL: [Container; 4] = [
        Container::Mp4,
        Container::Mov,
        Container::Mkv,
        Container::Webm,
    ];

    /// Every container with the codecs it takes: ".mp4: h264, h265, vp9; ...".
    fn pairs() -> String {
        Container::ALL
            .iter()
            .map(|c| {
                let codecs: Vec<&str> = Codec::ALL
                    .iter()
                    .filter(|&&k| c.takes(k))
                    .map(|k| k.name())
                    .collect();
                format!(".{}: {}", c.ext(), codecs.join(", "))
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn takes(self, codec: Codec) -> bool {
        match self {
            Container::Mkv => true,
            Container::Mp4 | Container::Mov => codec != Codec::Ffv1,
            Container::Webm => codec == Codec::Vp9,
        }
    }
    /// Audio encoders for a stream the container cannot take as is, best first.
    pub fn audio_encoders(self) -> &'static [(&'static str, &'static str)] {
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

/// The `clipdenoise` element's properties. The model is resolved but not loaded: only the
/// element loads it (at NULL->READY, before any data flows).
#[derive(Debug, Clone)]
pub struct ElementProps {
    /// `default` or a weights file.
    pub model: String,
    /// `cpu` or `cuda:N`: the device, checked to exist.
    pub device: String,
    pub precision: Precision,
    pub strength: f64,
    pub batch_size: Option<u32>,
    pub max_pixels: Option<u64>,
    pub temporal: Option<f64>,
    pub lookahead: u32,
    /// The index of the first frame denoised in the whole video (a job's segment: where
    /// its warm-up starts), for the temporal filter's restarts; 0 for `video`.
    pub temporal_origin: i64,
    pub coarse_grain: bool,
    /// The element's `refine` (`off`, or a `wiener` spec: [`clipdenoise::refine`]).
    pub refine: String,
}

/// The validated job.
#[derive(Debug, Clone)]
pub struct Plan {
    pub input: PathBuf,
    pub output: PathBuf,
    pub side_by_side: Option<PathBuf>,
    pub container: Container,
    pub codec: Codec,
    /// The quality level, None for a lossless codec.
    pub crf: Option<u32>,
    pub preset: String,
    pub no_audio: bool,
    /// The part to denoise (--start, --duration, --to); None for all of it.
    pub range: Option<Range>,
    /// A job segment: the frames written, of those denoised (`keep.rs`).
    pub keep: Option<super::keep::Keep>,
    /// A job segment: the video's PTS minus running time (the plan's), by which its range
    /// is read, so that decoding can seek to the segment's keyframe (`seek.rs`).
    pub pts_offset: Option<i64>,
    /// A job segment that starts decoding after the first frame: seek to its keyframe.
    pub seek: bool,
    pub element: ElementProps,
}

impl Plan {
    /// Check everything that can be checked without GStreamer, in the order the user would
    /// fix it; each failure is one line.
    pub fn new(args: &Args) -> anyhow::Result<Plan> {
        for (path, what, verb) in [
            (&args.input, "standard input", "read"),
            (&args.output, "standard output", "written"),
        ] {
            if path.as_os_str() == "-" {
                bail!(
                    "'-' ({what}) is not supported: video is {verb} as a file (give a file name{})",
                    if verb == "written" {
                        " ending in .mp4, .mkv, .mov or .webm"
                    } else {
                        ""
                    }
                );
            }
        }
        let container = Container::from_path(&args.output)?;
        let codec = args.codec.unwrap_or(container.default_codec());
        check_paths(args)?;
        if !container.takes(codec) {
            bail!(
                "{} video cannot go into .{} (these can: {})",
                codec.name(),
                container.ext(),
                Container::pairs()
            );
        }
        let crf = match (quality::range(codec)?, args.crf) {
            (Some((lo, hi, _)), Some(c)) if c < i64::from(lo) || c > i64::from(hi) => {
                bail!("--crf {c} is outside {lo}-{hi} for {}", codec.name())
            }
            (Some(_), Some(c)) => Some(c as u32), // in lo..=hi, so it fits
            (Some((_, _, d)), None) => Some(d),
            (None, Some(_)) => bail!("--crf does not apply to {} (it is lossless)", codec.name()),
            (None, None) => None,
        };
        Ok(Plan {
            input: args.input.clone(),
            output: args.output.clone(),
            side_by_side: args.side_by_side.clone(),
            container,
            codec,
            crf,
            preset: args.preset.clone(),
            no_audio: args.no_audio,
            range: Range::new(
                args.start.as_deref(),
                args.duration.as_deref(),
                args.to.as_deref(),
            )?,
            keep: None,
            pts_offset: None,
            seek: false,
            element: element_props(args)?,
        })
    }
}

/// Device and model are checked here so that their errors are one clear line before any
/// GStreamer.
fn element_props(args: &Args) -> anyhow::Result<ElementProps> {
    let (_, device) = args.model.device()?;
    let device = match device {
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        _ => "cpu".to_string(),
    };
    let model = match args.model.source()? {
        ModelSource::Default => "default".to_string(),
        ModelSource::File(p) => p.to_string_lossy().into_owned(),
    };
    Ok(ElementProps {
        model,
        device,
        precision: args.model.precision,
        strength: args.model.strength,
        batch_size: args.stream.batch_size,
        max_pixels: args.stream.max_pixels,
        temporal: args.stream.temporal,
        lookahead: args.stream.lookahead,
        temporal_origin: 0,
        coarse_grain: args.model.coarse_grain,
        refine: args.stream.refine.refine.to_string(),
    })
}

fn check_paths(args: &Args) -> anyhow::Result<()> {
    let input = &args.input;
    paths::check_input(input, "a video file")?;
    if paths::same_file(input, &args.output) || input == &args.output {
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
    paths::check_overwrite(&args.output, args.force)?;
    if let Some(png) = &args.side_by_side {
        if clipdenoise::research::imageio::Format::from_path(png).is_none() {
            bail!(
                "{}: --side-by-side needs an image file name (.png)",
                png.display()
            );
        }
        if paths::same_file(input, png) || png == &args.output {
            bail!(
                "{}: --side-by-side would overwrite INPUT or OUTPUT",
                png.display()
            );
        }
        paths::check_overwrite(png, args.force)?;
    }
    Ok(())
}
