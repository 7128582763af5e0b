//! `clipdenoise plan IN -o JOB_DIR`: scan the source's frames, fix every setting, cut the
//! frames into segments and write JOB_DIR/plan.json; `plan --status JOB_DIR`: which segments
//! are done.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::ValueEnum;
use clipdenoise::inference::{DeviceRequest, Precision};
use clipdenoise::job::{self, JobDir, JobPlan, SegmentState, Settings, SourceId, Split};
use gst::prelude::*;

use crate::models::{ModelArgs, StreamArgs};
use crate::video::plan::Codec;
use crate::video::{init_gstreamer, quality};

#[derive(clap::Args)]
#[command(after_help = "Examples:\n  \
    clipdenoise plan film.mkv -o job --segments 40 --codec h264 --crf 18\n  \
    clipdenoise segment job 7            # on any machine (default index: SLURM_ARRAY_TASK_ID, \
    JOB_COMPLETION_INDEX, AWS_BATCH_JOB_ARRAY_INDEX)\n  \
    clipdenoise plan --status job\n  \
    clipdenoise join job film-clean.mkv\n\n\
    JOB_DIR must be on a file system every worker sees, and the source at the same path on each. \
    Segments cut at frame boundaries; each one is denoised from 31 frames earlier (the temporal \
    stage's warm-up) to its lookahead's frames after it, so that the joined file equals one \
    `clipdenoise video` pass at the same settings (identical frames with --codec ffv1, the temporal \
    stage on or off). A plan fixes one precision for every machine: --precision auto (the default) \
    is recorded as fp32; give --precision bf16 for bf16.")]
pub struct Args {
    /// Input video
    #[arg(required_unless_present = "status")]
    input: Option<PathBuf>,
    /// The job directory to create (plan.json, segments/)
    #[arg(
        long,
        short,
        value_name = "JOB_DIR",
        required_unless_present = "status"
    )]
    output: Option<PathBuf>,
    /// Instead of planning, list JOB_DIR's done and missing segments
    #[arg(long, value_name = "JOB_DIR", conflicts_with_all = ["input", "output"])]
    status: Option<PathBuf>,
    /// Cut into this many segments of (nearly) equal frame counts
    #[arg(long, conflicts_with = "segment_seconds")]
    segments: Option<usize>,
    /// Cut into segments of this many seconds [default: 60]
    #[arg(long, value_name = "S")]
    segment_seconds: Option<f64>,
    /// Replace an existing plan (its segments are removed)
    #[arg(long, short)]
    force: bool,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    stream: StreamArgs,
    /// Video codec of the segments and the joined file
    #[arg(long, value_enum, default_value = "h264", help_heading = "Output")]
    codec: Codec,
    /// Constant-quality level, lower is better (as for `video`)
    #[arg(long, help_heading = "Output")]
    crf: Option<u32>,
    /// Encoder speed/size trade-off for h264/h265
    #[arg(long, default_value = "medium", value_parser = ["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"], help_heading = "Output")]
    preset: String,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    if let Some(dir) = &args.status {
        return status(dir);
    }
    let (Some(input), Some(out)) = (&args.input, &args.output) else {
        bail!("give IN and -o JOB_DIR, or --status JOB_DIR");
    };
    init_gstreamer()?;
    crate::paths::check_input(input, "a video file")?;
    let settings = settings(&args)?;
    let job = JobDir::new(out);
    if job.plan_path().exists() && !args.force {
        bail!(
            "{}: a plan is already there (--force replaces it and removes its segments)",
            job.plan_path().display()
        );
    }
    let scan = super::scan::scan(input)?;
    let how = match (args.segments, args.segment_seconds) {
        (Some(n), _) => Split::Count(n),
        (None, s) => Split::Seconds(s.unwrap_or(60.0)),
    };
    let segments = job::plan::split(&scan.frames, how, settings.warmup, settings.lookahead)?;
    let abs = std::path::absolute(input).unwrap_or_else(|_| input.clone());
    let plan = JobPlan {
        version: job::plan::VERSION,
        source: SourceId {
            path: abs.to_string_lossy().into_owned(),
            size: std::fs::metadata(input)?.len(),
            duration_ns: scan.duration_ns,
            sha256: job::sha256_file(input)?,
            video_pts_offset_ns: scan.pts_offset_ns,
        },
        settings,
        frames: scan.frames.len() as u64,
        segments,
    };
    plan.check()
        .map_err(|m| anyhow::anyhow!("internal: the plan made is invalid: {m}"))?;
    job.create(&plan, args.force)?;
    let n = plan.segments.len();
    let warmup = match plan.settings.warmup {
        Some(w) => format!("{w} warm-up frames each"),
        None => "each denoised from the first frame (temporal 1 never forgets)".into(),
    };
    eprintln!(
        "planned {}: {} frames in {n} segments ({warmup}); run `clipdenoise segment {} I` for I in 0-{}, then `clipdenoise join {} OUT`",
        job.plan_path().display(),
        plan.frames,
        out.display(),
        n - 1,
        out.display()
    );
    Ok(())
}

fn settings(args: &Args) -> anyhow::Result<Settings> {
    let _: DeviceRequest = args.model.device.parse()?;
    let (model, model_sha256) = super::model_identity(&args.model.source()?)?;
    let crf = match (quality::range(args.codec)?, args.crf) {
        (Some((lo, hi, _)), Some(c)) if c < lo || c > hi => {
            bail!("--crf {c} is outside {lo}-{hi} for {}", args.codec.name())
        }
        (Some(_), Some(c)) => Some(c),
        (Some((_, _, d)), None) => Some(d),
        (None, Some(_)) => bail!(
            "--crf does not apply to {} (it is lossless)",
            args.codec.name()
        ),
        (None, None) => None,
    };
    let temporal = match args.stream.temporal {
        Some(t) => t,
        None => element_default_temporal()?,
    };
    Ok(Settings {
        model,
        model_sha256,
        device: args.model.device.clone(),
        // One concrete precision for every segment: `auto` chooses by timing on each machine,
        // and segments computed in different precisions would not join into one pass.
        precision: match args.model.precision {
            Precision::Auto => Precision::Fp32,
            p => p,
        }
        .as_str()
        .to_string(),
        strength: args.model.strength,
        coarse_grain: args.model.coarse_grain,
        refine: args.stream.refine.refine.to_string(),
        batch_size: args.stream.batch_size,
        max_pixels: args.stream.max_pixels,
        temporal,
        codec: args.codec.name().to_string(),
        crf,
        preset: args.preset.clone(),
        warmup: Some(clipdenoise::temporal::warmup_frames(temporal) as u64),
        lookahead: clipdenoise::temporal::lookahead_frames(args.stream.lookahead as usize) as u64,
    })
}

/// The element's default `temporal` (what `video` uses without --temporal), from its
/// property spec.
fn element_default_temporal() -> anyhow::Result<f64> {
    let f = gst::ElementFactory::find(crate::video::ELEMENT)
        .context("the clipdenoise element is not registered")?;
    let e = f.create().build()?;
    let p = e
        .find_property("temporal")
        .context("the element has no temporal property")?;
    p.default_value()
        .get::<f64>()
        .context("the element's temporal is not a number")
}

/// `plan --status`: one line per segment that is not done, then the count.
fn status(dir: &std::path::Path) -> anyhow::Result<()> {
    let job = JobDir::new(dir);
    let plan = job.load_plan()?;
    let states = job.states(&plan, true);
    let mut missing = Vec::new();
    let mut bad = Vec::new();
    for (i, s) in states.iter().enumerate() {
        match s {
            SegmentState::Done(r) => println!("segment {i}: done ({} frames)", r.frames),
            SegmentState::Missing => {
                println!("segment {i}: missing");
                missing.push(i);
            }
            SegmentState::Bad(w) => {
                println!("segment {i}: bad ({w})");
                bad.push(i);
            }
        }
    }
    let n = states.len();
    let done = n - missing.len() - bad.len();
    let mut line = format!("{done} of {n} segments done");
    if !missing.is_empty() {
        line.push_str(&format!("; missing: {}", job::error::list(&missing)));
    }
    if !bad.is_empty() {
        line.push_str(&format!("; bad: {}", job::error::list(&bad)));
    }
    println!("{line}");
    Ok(())
}

/// The codec named in a plan.
pub(super) fn codec_of(name: &str) -> anyhow::Result<Codec> {
    Codec::from_str(name, true).map_err(|_| anyhow::anyhow!("unknown codec '{name}'"))
}
