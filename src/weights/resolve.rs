//! Models by name: what `--model` (CLI) and `model=` (the element) accept. `default` or
//! nothing is the built-in model; an existing file is itself; any other single name is
//! looked up, with or without `.safetensors`, in the model directories: `$CLIPDENOISE_MODEL_DIR`,
//! then the cache directory (`$CLIPDENOISE_CACHE_DIR`, else `~/.cache/clipdenoise`), where
//! `weights fetch` writes.

use std::path::PathBuf;

use super::ModelSource;
use crate::error::{Error, Result};

/// Environment variable naming a directory of models, searched first.
pub const ENV_MODEL_DIR: &str = "CLIPDENOISE_MODEL_DIR";
/// Environment variable overriding the cache directory.
pub const ENV_CACHE_DIR: &str = "CLIPDENOISE_CACHE_DIR";

/// The cache directory: `explicit`, else `$CLIPDENOISE_CACHE_DIR`, else the user's cache
/// directory + `clipdenoise`.
pub fn cache_dir(explicit: Option<&std::path::Path>) -> Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(ENV_CACHE_DIR).filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    dirs::cache_dir()
        .map(|d| d.join("clipdenoise"))
        .ok_or_else(|| {
            Error::Input(format!(
                "no user cache directory; set {ENV_CACHE_DIR} or pass --cache-dir"
            ))
        })
}

/// The directories searched for models by name, in order.
pub fn model_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(d) = std::env::var_os(ENV_MODEL_DIR).filter(|d| !d.is_empty()) {
        v.push(PathBuf::from(d));
    }
    if let Ok(d) = cache_dir(None) {
        if !v.contains(&d) {
            v.push(d);
        }
    }
    v
}

/// Every `*.safetensors` file directly inside the model directories, sorted per directory.
pub fn find_model_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in model_dirs() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = rd
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
            .collect();
        files.sort();
        out.extend(files);
    }
    out
}

impl ModelSource {
    /// `s` resolved: `default`/empty is the built-in model; an existing file is itself; else
    /// a name (with or without `.safetensors`) in [`model_dirs`]. Nothing found is an error
    /// naming `s`.
    pub fn resolve(s: &str) -> Result<ModelSource> {
        let source = ModelSource::parse(s);
        let ModelSource::File(path) = &source else {
            return Ok(source);
        };
        if path.exists() {
            if path.is_dir() {
                return Err(Error::ModelNotFound(format!(
                    "model {}: is a directory, not a weights file",
                    path.display()
                )));
            }
            return Ok(source);
        }
        if path.components().count() == 1 {
            for dir in model_dirs() {
                for name in [s.to_string(), format!("{s}.safetensors")] {
                    let p = dir.join(name);
                    if p.is_file() {
                        return Ok(ModelSource::File(p));
                    }
                }
            }
        }
        Err(Error::ModelNotFound(format!(
            "model file {} not found (see `clipdenoise info` for the models found)",
            path.display()
        )))
    }
}
