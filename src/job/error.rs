//! The job module's typed errors; each message is one line that says what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// plan.json (or a done record) that is not a valid plan: untrusted input.
    #[error("{path}: not a valid job plan: {msg}")]
    BadPlan { path: PathBuf, msg: String },
    /// The arguments cannot make a plan (too many segments, no frames, ...).
    #[error("cannot plan: {0}")]
    Split(String),
    /// The source file is not the one the plan was made for.
    #[error("{path}: the source changed since the plan was made ({what}); make a new plan")]
    SourceChanged { path: PathBuf, what: String },
    /// The model file is not the one the plan was made for.
    #[error("the model {model} changed since the plan was made (SHA-256 {found}, planned {planned}); make a new plan")]
    ModelChanged {
        model: String,
        found: String,
        planned: String,
    },
    #[error("segment {index} does not exist: the plan has {count} segments (0-{})", count.saturating_sub(1))]
    NoSuchSegment { index: u64, count: usize },
    #[error("segment {index} is being written by another worker (it holds {lock})")]
    Locked { index: usize, lock: PathBuf },
    /// A segment whose file does not match its done record.
    #[error("segment {index}: {path} does not match its done record ({what}); run `clipdenoise segment JOB_DIR {index}` again")]
    Corrupt {
        index: usize,
        path: PathBuf,
        what: String,
    },
    /// Segments not done yet (join).
    #[error("{done} of {count} segments are done; missing: {}", list(.missing))]
    Missing {
        done: usize,
        count: usize,
        missing: Vec<usize>,
    },
}

impl JobError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        JobError::Io {
            path: path.into(),
            source,
        }
    }
    pub fn bad_plan(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        JobError::BadPlan {
            path: path.into(),
            msg: msg.into().replace('\n', " "),
        }
    }
}

/// "0, 2, 5" (at most 20 named, then a count).
pub fn list(v: &[usize]) -> String {
    let mut s: Vec<String> = v.iter().take(20).map(|i| i.to_string()).collect();
    if v.len() > 20 {
        s.push(format!("and {} more", v.len() - 20));
    }
    s.join(", ")
}
