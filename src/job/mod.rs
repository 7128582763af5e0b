//! Offline jobs cut into segments that many machines run independently and one command joins
//! (`clipdenoise plan`, `segment`, `join`): the job plan ([`plan`]: `plan.json`, the source's
//! identity, every setting, the segments by frame index with their warm-up and lookahead) and
//! the job directory ([`store`]: segment files, done records, locks, atomic writes). Running
//! a segment and joining are GStreamer/ffmpeg work and live in the CLI; the scheduler (Slurm,
//! Ray, Kubernetes, AWS Batch) is always an existing one (`deploy/`).

pub mod error;
pub mod plan;
pub mod store;

pub use error::JobError;
pub use plan::{FrameTime, JobPlan, Segment, Settings, SourceId, Split};
pub use store::{DoneRecord, JobDir, SegmentState};

use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String, JobError> {
    let mut f = std::fs::File::open(path).map_err(|e| JobError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| JobError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Lower-case hex SHA-256 of bytes.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}
