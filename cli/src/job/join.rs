//! `clipdenoise join JOB_DIR OUT`: when every segment is done and matches its done record,
//! concatenate them without re-encoding (ffmpeg's concat demuxer, stream copy), with the
//! source's audio copied once and cut where the video ends (a shorter one kept whole), into a temporary file next to OUT that
//! is checked (frame count, first packet a keyframe) and renamed into place.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};
use clipdenoise::job::{store::write_atomic, JobDir};

#[derive(clap::Args)]
pub struct Args {
    /// The job directory, every segment done
    job_dir: PathBuf,
    /// The joined video (.mkv, .mp4, .mov, .webm as the codec allows)
    output: PathBuf,
    /// Overwrite OUT if it exists
    #[arg(long, short)]
    force: bool,
    /// Leave the source's audio out
    #[arg(long)]
    no_audio: bool,
}

/// Removes the temporary output (and the list and the audio) unless renamed.
struct Temp(std::cell::RefCell<Vec<PathBuf>>);
impl Drop for Temp {
    fn drop(&mut self) {
        for p in self.0.borrow().iter() {
            let _ = std::fs::remove_file(p);
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let job = JobDir::new(&args.job_dir);
    let plan = job.load_plan()?;
    let files = job.complete(&plan)?;
    let ext = args
        .output
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let takes = match plan.settings.codec.as_str() {
        "ffv1" => ["mkv"].contains(&ext.as_str()),
        "vp9" => ["mkv", "webm", "mp4"].contains(&ext.as_str()),
        _ => ["mkv", "mp4", "mov", "m4v"].contains(&ext.as_str()),
    };
    if !takes {
        bail!(
            "{}: {} video cannot go into .{ext} (use .mkv)",
            args.output.display(),
            plan.settings.codec
        );
    }
    crate::paths::check_overwrite(&args.output, args.force)?;
    let audio = !args.no_audio;
    if audio {
        // The audio comes from the source: it must still be the planned file.
        super::check_inputs(&plan)?;
    }
    let dir = match args.output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = args
        .output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pid = std::process::id();
    let temp_out = dir.join(format!(".{name}.{pid}.part.{ext}"));
    let list = job.root.join(format!(".join.{pid}.txt"));
    let _temp = Temp(std::cell::RefCell::new(vec![
        temp_out.clone(),
        list.clone(),
    ]));
    let mut text = String::from("ffconcat version 1.0\n");
    for f in &files {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        text.push_str(&format!(
            "file '{}'\n",
            abs.to_string_lossy().replace('\'', "'\\''")
        ));
    }
    write_atomic(&list, text.as_bytes())?;
    let audio_file = match audio && has_audio(Path::new(&plan.source.path))? {
        true => {
            let a = job.root.join(format!(".join.{pid}.audio.mka"));
            _temp.0.borrow_mut().push(a.clone());
            audio_from_zero(&plan, &a)?;
            Some(a)
        }
        false => None,
    };
    let mut cmd = ffmpeg();
    cmd.args(["-f", "concat", "-safe", "0", "-i"]).arg(&list);
    if let Some(a) = &audio_file {
        cmd.arg("-i").arg(a);
    }
    cmd.args(["-map", "0:v:0"]);
    if audio_file.is_some() {
        cmd.args(["-map", "1:a"]);
    }
    // The times as they are (an audio packet before 0 must not shift the video).
    cmd.args(["-avoid_negative_ts", "disabled"]);
    cmd.args(["-c", "copy"]).arg(&temp_out);
    run_ffmpeg(cmd, "join the segments")?;
    let (frames, keyframe) = probe(&temp_out)?;
    if frames != plan.frames || !keyframe {
        bail!(
            "the joined file has {frames} frames (first a keyframe: {keyframe}), the plan {}; nothing written",
            plan.frames
        );
    }
    std::fs::rename(&temp_out, &args.output)
        .with_context(|| format!("cannot move the result to {}", args.output.display()))?;
    eprintln!(
        "wrote {}: {frames} frames from {} segments{}",
        args.output.display(),
        files.len(),
        if audio {
            ", the source's audio (if any) copied"
        } else {
            ""
        }
    );
    Ok(())
}

fn ffmpeg() -> Command {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"]);
    cmd
}

/// Run `cmd` (ffmpeg), failing with its first line of errors.
fn run_ffmpeg(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .output()
        .context("cannot run ffmpeg (install it: apt-get install ffmpeg)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("ffmpeg could not {what}: {line}");
    }
    Ok(())
}

/// Whether `path` has an audio stream (ffprobe).
fn has_audio(path: &Path) -> anyhow::Result<bool> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "a",
            "-show_entries",
            "stream=index",
        ])
        .args(["-of", "csv=p=0"])
        .arg(path)
        .output()
        .context("cannot run ffprobe (install ffmpeg)")?;
    if !out.status.success() {
        bail!(
            "ffprobe cannot read the source: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// The source's audio streams copied into `out` (Matroska) from time 0 to the video's end, as
/// one pass keeps them: without the packets before 0 (the AAC priming an MP4's edit list
/// trims) and nothing past the last frame (not -shortest on the join: that would cut the video
/// where a shorter audio track ends). A step of its own: -ss on the join would also drop the
/// first H.264 packets (their decoding times are negative).
fn audio_from_zero(plan: &clipdenoise::job::JobPlan, out: &Path) -> anyhow::Result<()> {
    let mut cmd = ffmpeg();
    cmd.arg("-i")
        .arg(&plan.source.path)
        .args(["-map", "0:a", "-ss", "0", "-to"]);
    cmd.arg(format!("{:.9}", plan.source.duration_ns as f64 / 1e9));
    cmd.args(["-c", "copy", "-f", "matroska"]).arg(out);
    run_ffmpeg(cmd, "copy the source's audio")
}

/// Video packets in `path` and whether the first is a keyframe (ffprobe, as players read it).
fn probe(path: &Path) -> anyhow::Result<(u64, bool)> {
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("ffprobe")
            .args(["-v", "error", "-select_streams", "v:0"])
            .args(args)
            .arg(path)
            .output()
            .context("cannot run ffprobe (install ffmpeg)")?;
        if !out.status.success() {
            bail!(
                "ffprobe cannot read the joined file: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let n = run(&[
        "-count_packets",
        "-show_entries",
        "stream=nb_read_packets",
        "-of",
        "csv=p=0",
    ])?;
    let frames = n
        .parse()
        .with_context(|| format!("ffprobe's packet count '{n}'"))?;
    let first = run(&[
        "-read_intervals",
        "%+#1",
        "-show_entries",
        "packet=flags",
        "-of",
        "csv=p=0",
    ])?;
    Ok((frames, first.starts_with('K')))
}
