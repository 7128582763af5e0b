//! The end of a job: the checks that the whole input went through, the side-by-side image,
//! the move of the finished file into place and the summary line.

use std::path::Path;
use std::sync::atomic::Ordering;

use anyhow::{anyhow, bail, Context};
use gst_video::prelude::*;

use super::plan::Plan;
use super::readback;
use super::state::{Capture, Shared};
use super::temp::TempOutput;
use super::watch::Outcome;

/// Check the result, write the side-by-side image, move the file into place and report.
/// An interrupted job exits here with status 130.
pub fn finish(
    plan: &Plan,
    mut temp: TempOutput,
    shared: &Shared,
    outcome: Outcome,
) -> anyhow::Result<()> {
    let frames_in = shared.frames_in.load(Ordering::Relaxed);
    let frames_out = shared.frames_out.load(Ordering::Relaxed);
    if frames_out == 0 {
        if outcome.interrupted {
            bail!("interrupted before the first frame was done: no output written");
        }
        if let Some(r) = plan.range.filter(|r| !r.start.is_zero()) {
            bail!(
                "{}: no video frames from --start {:.2} s on{}",
                plan.input.display(),
                r.start.seconds_f64(),
                outcome
                    .duration
                    .map(|d| format!(" (the file lasts {:.2} s)", d.seconds_f64()))
                    .unwrap_or_default()
            );
        }
        bail!("{}: no video frames could be decoded", plan.input.display());
    }
    // The count the file holds, read back from it: what players will show.
    let counts = readback::count(&temp.path).with_context(|| {
        format!(
            "the written video is not readable ({} frames went into it)",
            frames_out
        )
    })?;
    let written = counts.video;
    let short = match outcome.interrupted {
        false => check_complete(plan, shared, &outcome, written),
        true => None,
    };
    if let Some(png) = &plan.side_by_side {
        write_side_by_side(png, &shared.capture.lock().unwrap())
            .with_context(|| format!("cannot write the side-by-side image {}", png.display()))?;
    }
    std::fs::rename(&temp.path, &plan.output)
        .with_context(|| format!("cannot move the result to {}", plan.output.display()))?;
    temp.keep = true;
    if let Some(png) = &plan.side_by_side {
        eprintln!("before/after: {}", png.display());
    }
    if let Some(w) = short {
        eprintln!("warning: {w}");
    }
    // A job segment's warm-up frames go through the denoiser, not to the encoder.
    if frames_in != frames_out && plan.keep.is_none() {
        eprintln!("warning: {frames_in} frames went into the denoiser but {frames_out} came out");
    }
    if written != frames_out {
        eprintln!(
            "warning: {frames_out} frames went into the {} encoder but the file holds {written}",
            plan.codec.name()
        );
    }
    let whole = !outcome.interrupted && plan.range.is_none() && plan.keep.is_none();
    for n in trim_notes(shared, whole, &counts.audio) {
        eprintln!("note: {n}");
    }
    summary(plan, shared, &outcome, written);
    if outcome.interrupted {
        std::process::exit(130);
    }
    Ok(())
}

fn video_end(shared: &Shared) -> gst::ClockTime {
    shared
        .video_end
        .lock()
        .unwrap()
        .unwrap_or(gst::ClockTime::ZERO)
}

/// A file cut short or damaged often ends without an error: its streams stop before the
/// duration its header announces. What decoded is kept (as ffmpeg salvages it); more than a
/// few frames short, a warning says how many frames that is against what the file announces.
fn check_complete(
    plan: &Plan,
    shared: &Shared,
    outcome: &Outcome,
    frames_out: u64,
) -> Option<String> {
    let video_end = video_end(shared);
    // The video's times are the output's (from 0 at --start on), the audio's the input's.
    let audio_end = shared.audio_end.lock().unwrap().unwrap_or_default();
    let d = outcome.duration?;
    let (stream_end, d) = match plan.range {
        Some(r) => (
            video_end.max(audio_end.saturating_sub(r.start)),
            r.length(d),
        ),
        None => (video_end.max(audio_end), d),
    };
    let (ends, lasts) = (stream_end.seconds_f64(), d.seconds_f64());
    let fps = *shared.fps.lock().unwrap();
    let rate = fps.map_or(30.0, |f| f.numer() as f64 / f.denom() as f64);
    // A few frames' worth: container rounding, audio priming.
    let tolerance = (3.0 / rate).max(0.1);
    if ends + tolerance >= lasts {
        return None;
    }
    let announced = fps.map_or(String::new(), |_| {
        format!(" of the about {:.0} it announces", lasts * rate)
    });
    Some(format!(
        "{}: cut short or damaged: salvaged {frames_out} frames{announced} (its streams end at \
         {ends:.2} s, it says it lasts {lasts:.2} s)",
        plan.input.display()
    ))
}

/// For each audio stream copied from an MP4 whose edit list trims it, what was left out: the
/// start the list skips (in samples when the box tree gives them) and, when the whole input
/// went through, the packets the written file holds (`written`: each audio stream's, in the
/// order of the summary's audio) of the track's.
fn trim_notes(shared: &Shared, whole: bool, written: &[u64]) -> Vec<String> {
    let copied = shared.copied.lock().unwrap();
    copied
        .iter()
        .filter_map(|c| {
            let skipped = (*c.trimmed.lock().unwrap())?;
            let track = (*c.track.lock().unwrap())
                .and_then(|id| shared.mp4.iter().find(|t| t.id == id && t.handler == "soun"));
            let ms = skipped.nseconds() as f64 / 1e6;
            let start = match track.and_then(|t| t.media_time.map(|m| (m, t.timescale))) {
                Some((m, rate)) if rate > 0 => {
                    format!("its first {m} samples ({ms:.0} ms at {rate} Hz, the encoder's priming)")
                }
                _ => format!("its first {ms:.0} ms (the encoder's priming)"),
            };
            let packets = written.get(c.index).copied();
            let count = match (track.map(|t| u64::from(t.samples)), packets) {
                (Some(total), Some(packets)) if whole && total >= packets => format!(
                    ": the output holds {packets} of its {total} packets, {} left out",
                    total - packets
                ),
                _ => String::new(),
            };
            Some(format!(
                "the {} audio is copied as the MP4's edit list trims it, not bit for bit: \
                 GStreamer's MP4 reader leaves out {start} and any packet the list cuts at the end{count}",
                c.label.lock().unwrap()
            ))
        })
        .collect()
}

/// The last line: what was written (or, interrupted, what the file holds).
fn summary(plan: &Plan, shared: &Shared, outcome: &Outcome, frames_out: u64) {
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
    let subtitles = shared.subtitles.lock().unwrap().join(", ");
    let audio = match subtitles.is_empty() {
        true => audio,
        false => format!("{audio}, subtitles: {subtitles}"),
    };
    let secs = outcome.elapsed.as_secs_f64();
    let video_start = shared
        .video_start
        .lock()
        .unwrap()
        .unwrap_or(gst::ClockTime::ZERO);
    let length = video_end(shared).saturating_sub(video_start);
    if outcome.interrupted {
        eprintln!(
            "stopped early: {} holds the first {frames_out} frames ({:.2} s{}) and is playable",
            plan.output.display(),
            length.seconds_f64(),
            outcome
                .duration
                .map(|d| format!(" of {:.2} s", d.seconds_f64()))
                .unwrap_or_default()
        );
        return;
    }
    eprintln!(
        "wrote {}: {frames_out} frames, {size}{:.2} s, {} in .{}, {audio}; took {:.1} s ({:.2} fps)",
        plan.output.display(),
        length.seconds_f64(),
        plan.codec.name(),
        plan.container.ext(),
        secs,
        frames_out as f64 / secs.max(1e-9)
    );
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
    let mut out = vec![0; w * h * 3];
    clipdenoise::frame::copy_rows(frame.plane_data(0)?, stride, &mut out, w * 3, w * 3, h)?;
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
    clipdenoise::frame::copy_rows(&b, w * 3, &mut out, ow * 3, w * 3, h)?;
    clipdenoise::frame::copy_rows(&a, w * 3, &mut out[(w + gap) * 3..], ow * 3, w * 3, h)?;
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
    let img = clipdenoise::research::imageio::RgbImage {
        width: ow,
        height: h,
        samples: clipdenoise::research::imageio::Samples::U8(out),
    };
    clipdenoise::research::imageio::write(path, &img, 95)?;
    Ok(())
}
