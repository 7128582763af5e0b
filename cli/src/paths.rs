//! Path checks the subcommands share: an input that must be a file, an output that may only
//! be replaced with `--force`, two names for one file.

use std::path::Path;

use anyhow::bail;

/// `path` exists and is not a directory; `what` names what it should be ("a video file").
#[cfg_attr(not(feature = "gst"), allow(dead_code))] // used by `video`
pub fn check_input(path: &Path, what: &str) -> anyhow::Result<()> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("{}: no such file", path.display())
        }
        Err(e) => bail!("{}: {e}", path.display()),
        Ok(m) if m.is_dir() => bail!("{}: is a directory, not {what}", path.display()),
        Ok(_) => Ok(()),
    }
}

/// An existing `path` is only replaced with `--force`.
pub fn check_overwrite(path: &Path, force: bool) -> anyhow::Result<()> {
    if path.exists() && !force {
        bail!(
            "{} already exists (use --force to overwrite)",
            path.display()
        );
    }
    Ok(())
}

/// Whether two paths name the same existing file (hard links and symlinks included).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
