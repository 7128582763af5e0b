//! `clipdenoise segment JOB_DIR [I]`: denoise and encode segment I of a plan, exactly its
//! frames (the first a keyframe), written through a temporary file and renamed, then recorded
//! done. Already done: exits 0 at once. Another worker on it: refused (its lock).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clipdenoise::job::{JobDir, SegmentState};

use crate::models::ModelArgs;
use crate::video::keep::Keep;
use crate::video::plan::{Container, ElementProps, Plan};
use crate::video::range::Range;

/// The schedulers' array index variables, in the order they are read.
pub const INDEX_VARS: [&str; 3] = [
    "SLURM_ARRAY_TASK_ID",
    "JOB_COMPLETION_INDEX",
    "AWS_BATCH_JOB_ARRAY_INDEX",
];

#[derive(clap::Args)]
pub struct Args {
    /// The job directory (from `clipdenoise plan`)
    job_dir: PathBuf,
    /// The segment [default: $SLURM_ARRAY_TASK_ID, $JOB_COMPLETION_INDEX or $AWS_BATCH_JOB_ARRAY_INDEX]
    index: Option<u64>,
}

fn index_from_env() -> anyhow::Result<u64> {
    for v in INDEX_VARS {
        if let Ok(s) = std::env::var(v) {
            return s
                .trim()
                .parse()
                .with_context(|| format!("{v}='{s}' is not a segment index"));
        }
    }
    bail!(
        "no segment index: give I, or run under a job array ({})",
        INDEX_VARS.join(", ")
    )
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let index = match args.index {
        Some(i) => i,
        None => index_from_env()?,
    };
    let job = JobDir::new(&args.job_dir);
    let plan = job.load_plan()?;
    let seg = job.segment(&plan, index)?.clone();
    let i = seg.index;
    if let SegmentState::Done(_) = job.state(&plan, i, true) {
        eprintln!("segment {i}: already done");
        return Ok(());
    }
    super::check_inputs(&plan)?;
    let _lock = job.lock(i)?;
    // Another worker may have finished it while we checked.
    if let SegmentState::Done(_) = job.state(&plan, i, true) {
        eprintln!("segment {i}: already done");
        return Ok(());
    }
    crate::video::init_gstreamer()?;
    let t = &plan.settings;
    let codec = super::plan::codec_of(&t.codec)?;
    let model = ModelArgs {
        model: t.model.clone(),
        device: t.device.clone(),
        precision: t.precision.parse()?,
        strength: t.strength,
        coarse_grain: t.coarse_grain,
    };
    let (_, device) = model.device()?;
    let output = job.segment_file(&plan, i);
    let ns = gst::ClockTime::from_nseconds;
    let video = Plan {
        input: PathBuf::from(&plan.source.path),
        output: output.clone(),
        side_by_side: None,
        container: match t.segment_ext() {
            "mp4" => Container::Mp4,
            _ => Container::Mkv,
        },
        codec,
        crf: t.crf,
        preset: t.preset.clone(),
        no_audio: true,
        range: Some(Range {
            start: ns(seg.decode_start_pts),
            end: seg.stop_pts.map(ns),
        }),
        pts_offset: Some(plan.source.video_pts_offset_ns),
        seek: seg.decode_start > 0,
        keep: Some(Keep {
            start: ns(seg.start_pts - seg.decode_start_pts),
            end: seg.end_pts.map(|e| ns(e - seg.decode_start_pts)),
        }),
        element: ElementProps {
            model: t.model.clone(),
            device: match device {
                tch::Device::Cuda(d) => format!("cuda:{d}"),
                _ => "cpu".into(),
            },
            precision: model.precision,
            strength: t.strength,
            batch_size: t.batch_size,
            max_pixels: t.max_pixels,
            temporal: Some(t.temporal),
            lookahead: u32::try_from(t.lookahead).context("settings.lookahead is too large")?,
            temporal_origin: i64::try_from(seg.decode_start)
                .context("decode_start is too large")?,
            coarse_grain: t.coarse_grain,
            refine: t.refine.clone(),
        },
    };
    let _ = std::fs::remove_file(&output);
    let ran = crate::video::run_plan(video)?;
    let check = super::scan::scan(&output)?;
    let got = check.frames.len() as u64;
    if got != seg.frames() || !check.first_is_keyframe {
        let _ = std::fs::remove_file(&output);
        bail!(
            "segment {i}: wrote {got} frames (first a keyframe: {}), expected {} from frame {}; removed it",
            check.first_is_keyframe,
            seg.frames(),
            seg.start
        );
    }
    let rec = job.mark_done(&plan, i, got)?;
    eprintln!(
        "segment {i}: done, frames {}-{} ({} frames, {} bytes) in {}; decoded from frame {}; temporal stage only (warm-up, lookahead, no network): {} frames",
        seg.start,
        seg.end - 1,
        rec.frames,
        rec.bytes,
        output.display(),
        seg.decode_start.saturating_sub(ran.frames_before),
        ran.frames_decode_only
    );
    Ok(())
}
