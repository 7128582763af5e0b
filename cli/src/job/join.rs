//! `clipdenoise join JOB_DIR OUT`: when every segment is done and matches its done record,
//! concatenate them without re-encoding (ffmpeg's concat demuxer, stream copy), with the
//! source's audio copied once and cut to the video, into a temporary file next to OUT that
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

/// Removes the temporary output (and the list) unless renamed.
struct Temp(Vec<PathBuf>);
impl Drop for Temp {
    fn drop(&mut self) {
        for p in &self.0 {
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
    let _temp = Temp(vec![temp_out.clone(), list.clone()]);
    let mut text = String::from("ffconcat version 1.0\n");
    for f in &files {
        let abs = std::path::absolute(f).unwrap_or_else(|_| f.clone());
        text.push_str(&format!(
            "file '{}'\n",
            abs.to_string_lossy().replace('\'', "'\\''")
        ));
    }
    write_atomic(&list, text.as_bytes())?;
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y"])
        .args(["-f", "concat", "-safe", "0", "-i"])
        .arg(&list);
    if audio {
        cmd.arg("-i").arg(&plan.source.path);
    }
    cmd.args(["-map", "0:v:0"]);
    if audio {
        cmd.args(["-map", "1:a?", "-shortest"]);
    }
    cmd.args(["-c", "copy"]).arg(&temp_out);
    let out = cmd
        .output()
        .context("cannot run ffmpeg (install it: apt-get install ffmpeg)")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        bail!("ffmpeg could not join the segments: {line}");
    }
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
