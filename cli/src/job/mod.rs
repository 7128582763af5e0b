//! `clipdenoise plan`, `segment` and `join`: one offline job cut into segments that any
//! scheduler runs (Slurm job arrays, Ray tasks, Kubernetes Indexed Jobs, AWS Batch arrays;
//! `deploy/`), then joined without re-encoding. The plan, the job directory, done records and
//! locks are the core library's (`clipdenoise::job`); a segment runs `video`'s pipeline
//! ([`crate::video::run_plan`]) on its frames plus the temporal stage's warm-up; the join is
//! ffmpeg's concat demuxer. [`scan`] lists a file's frames (GStreamer, no decoding).

pub mod join;
pub mod plan;
mod scan;
pub mod segment;

use std::path::Path;

use anyhow::Context;
use clipdenoise::job::{sha256_bytes, sha256_file, JobError, JobPlan};
use clipdenoise::weights::{ModelSource, DEFAULT_MODEL};

/// The model setting as a plan stores it (`default` or an absolute path) and its SHA-256.
fn model_identity(source: &ModelSource) -> anyhow::Result<(String, String)> {
    Ok(match source {
        ModelSource::Default => ("default".into(), sha256_bytes(DEFAULT_MODEL)),
        ModelSource::File(p) => {
            let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
            (abs.to_string_lossy().into_owned(), sha256_file(p)?)
        }
    })
}

/// Refuse to work when the source or the model are not what the plan was made for.
fn check_inputs(plan: &JobPlan) -> anyhow::Result<()> {
    let src = Path::new(&plan.source.path);
    let size = std::fs::metadata(src)
        .with_context(|| format!("{}: the job's source", src.display()))?
        .len();
    if size != plan.source.size {
        return Err(JobError::SourceChanged {
            path: src.into(),
            what: format!("{size} bytes, planned {}", plan.source.size),
        }
        .into());
    }
    if sha256_file(src)? != plan.source.sha256 {
        return Err(JobError::SourceChanged {
            path: src.into(),
            what: "its content hash differs".into(),
        }
        .into());
    }
    let source = crate::models::resolve_model(&plan.settings.model)?;
    let (_, found) = model_identity(&source)?;
    if found != plan.settings.model_sha256 {
        return Err(JobError::ModelChanged {
            model: plan.settings.model.clone(),
            found,
            planned: plan.settings.model_sha256.clone(),
        }
        .into());
    }
    Ok(())
}
