//! The folders an evaluation reads: clean-image folders (sorted, optionally only the first N)
//! and real noisy/clean pairs (`noisy/` + `clean/` subfolders, or `NAME_noisy`/`NAME_clean`
//! files side by side).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::research::imageio;

pub(super) struct Folder {
    pub name: String,
    pub path: PathBuf,
    /// (noisy or clean image, clean partner for pairs).
    pub images: Vec<(PathBuf, Option<PathBuf>)>,
}

pub(super) fn folder_name(path: &Path) -> String {
    let p = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

pub(super) fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

pub(super) fn list_folder(dir: &Path, limit: Option<usize>) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::Input(format!("{}: not a folder", dir.display())));
    }
    let mut v = imageio::list_images(dir)?;
    if v.is_empty() {
        return Err(Error::Input(format!(
            "{}: no PNG, JPEG or TIFF images",
            dir.display()
        )));
    }
    if let Some(n) = limit {
        v.truncate(n);
    }
    Ok(v)
}

/// The (noisy, clean) files of a pairs folder: `noisy/` and `clean/` subfolders matched by
/// file name (or stem), or one flat folder of `NAME_noisy.EXT` with `NAME_clean.EXT` (or `NAME_real` with
/// `NAME_mean`).
pub fn list_pairs(dir: &Path, limit: Option<usize>) -> Result<Vec<(PathBuf, Option<PathBuf>)>> {
    if !dir.join("noisy").is_dir() {
        return list_flat_pairs(dir, limit);
    }
    let noisy = list_folder(&dir.join("noisy"), limit)?;
    let clean = list_folder(&dir.join("clean"), None)?;
    noisy
        .into_iter()
        .map(|n| {
            let partner = clean
                .iter()
                .find(|c| c.file_name() == n.file_name())
                .or_else(|| clean.iter().find(|c| c.file_stem() == n.file_stem()))
                .ok_or_else(|| {
                    Error::Input(format!(
                        "{}: no image of that name in {}",
                        n.display(),
                        dir.join("clean").display()
                    ))
                })?;
            Ok((n, Some(partner.clone())))
        })
        .collect()
}

/// The (noisy, clean) name suffixes of a flat pairs folder: `NAME_noisy` / `NAME_clean`, or
/// PolyU's `NAME_real` / `NAME_mean` (one shot / the mean of many shots).
const FLAT_SUFFIXES: [(&str, &str); 2] = [("_noisy", "_clean"), ("_real", "_mean")];

fn list_flat_pairs(dir: &Path, limit: Option<usize>) -> Result<Vec<(PathBuf, Option<PathBuf>)>> {
    let files = list_folder(dir, None)?;
    let mut pairs = Vec::new();
    for n in &files {
        let name = file_name(n);
        let Some((stem, ext)) = name.rsplit_once('.') else {
            continue;
        };
        let Some((base, clean_suffix)) = FLAT_SUFFIXES
            .iter()
            .find_map(|(noisy, clean)| stem.strip_suffix(noisy).map(|b| (b, clean)))
        else {
            continue;
        };
        let want = format!("{base}{clean_suffix}");
        let clean = files
            .iter()
            .find(|c| file_name(c).rsplit_once('.').map(|(s, _)| s) == Some(want.as_str()))
            .ok_or_else(|| Error::Input(format!("{}: no {want}.{ext} beside it", n.display())))?;
        pairs.push((n.clone(), Some(clean.clone())));
    }
    if pairs.is_empty() {
        return Err(Error::Input(format!(
            "{}: no noisy/ and clean/ subfolders and no NAME_noisy / NAME_clean (or NAME_real / \
             NAME_mean) images",
            dir.display()
        )));
    }
    if let Some(k) = limit {
        pairs.truncate(k);
    }
    Ok(pairs)
}

/// Dumps are laid out by folder name, so two folders of the same name would collide.
pub(super) fn unique_names<'a>(names: impl Iterator<Item = &'a str>) -> Result<()> {
    let mut seen = BTreeSet::new();
    for n in names {
        if !seen.insert(n) {
            return Err(Error::Input(format!(
                "two evaluation folders are named '{n}'"
            )));
        }
    }
    Ok(())
}
