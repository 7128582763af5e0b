//! The temporary output: `.NAME.PID.part.EXT` next to OUTPUT, renamed into place when the job
//! succeeds, removed when it fails. A process killed outright (SIGKILL, a power cut) leaves
//! its file behind; the next job writing into that directory removes those of dead processes.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use super::plan::Plan;

/// What follows the pid in a temporary file's name, before the extension.
const PART: &str = ".part.";

/// The temporary output next to OUTPUT; removed on drop unless it was renamed into place.
pub struct TempOutput {
    pub path: PathBuf,
    pub created_dir: Option<PathBuf>,
    pub keep: bool,
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

/// Create the temporary file next to OUTPUT (and OUTPUT's directory if missing): this is where
/// an unwritable destination shows up, before anything runs.
pub fn temp_output(plan: &Plan) -> anyhow::Result<TempOutput> {
    let output = &plan.output;
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
    remove_stale(&dir);
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let path = dir.join(format!(
        ".{name}.{}{PART}{}",
        std::process::id(),
        plan.container.ext()
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

/// The pid in a temporary file's name `.NAME.PID.part.EXT`, if it is one.
fn pid_of(file_name: &str) -> Option<u32> {
    let head = file_name.strip_prefix('.')?;
    let (head, ext) = head.rsplit_once(PART)?;
    if ext.is_empty() || ext.contains('.') {
        return None;
    }
    let (_, pid) = head.rsplit_once('.')?;
    pid.parse().ok()
}

/// Whether process `pid` is running (on Linux; elsewhere every pid counts as running, so
/// nothing is removed).
fn alive(pid: u32) -> bool {
    !Path::new("/proc/self").exists() || Path::new(&format!("/proc/{pid}")).exists()
}

/// Remove the temporary files of dead processes in `dir` (best effort).
fn remove_stale(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let stale = pid_of(&name).is_some_and(|pid| pid != std::process::id() && !alive(pid));
        if stale && e.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pid_of;

    #[test]
    fn temporary_names_give_their_pid() {
        assert_eq!(pid_of(".out.mp4.1234.part.mp4"), Some(1234));
        assert_eq!(pid_of(".a.b.mkv.7.part.mkv"), Some(7));
        assert_eq!(pid_of("out.mp4.1234.part.mp4"), None);
        assert_eq!(pid_of(".out.mp4.x.part.mp4"), None);
        assert_eq!(pid_of(".out.mp4.12.part."), None);
        assert_eq!(pid_of(".notes.txt"), None);
    }
}
