//! The library's typed errors. Every message is one line that names the problem.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid model config: {0}")]
    Config(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A weights file that is not what it claims to be (bad magic, truncated, unsafe pickle, ...).
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },

    /// A weights file whose tensors do not fit the model.
    #[error("{path}: {msg}")]
    Weights { path: PathBuf, msg: String },

    /// A model named by the user that is not there, or not a file.
    #[error("{0}")]
    ModelNotFound(String),

    #[error("unknown device '{0}' (expected auto, cpu, cuda or cuda:N)")]
    UnknownDevice(String),

    #[error("device {0} is not available: {1}")]
    DeviceUnavailable(String, String),

    #[error("invalid input: {0}")]
    Input(String),

    #[error("download failed: {0}")]
    Download(String),

    #[error("libtorch: {0}")]
    Torch(String),

    #[error("the model worker stopped")]
    WorkerGone,

    /// A batch stopped between two steps because its caller no longer wants it (a flush, the
    /// element stopping, the process exiting).
    #[error("interrupted")]
    Interrupted,
}

impl From<tch::TchError> for Error {
    fn from(e: tch::TchError) -> Self {
        // libtorch errors carry a multi-line C++ backtrace; keep the first line.
        let s = e.to_string();
        let first = s
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("")
            .trim();
        Error::Torch(first.to_string())
    }
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
    pub fn format(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            msg: one_line(msg.into()),
        }
    }
    pub fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Weights {
            path: path.into(),
            msg: one_line(msg.into()),
        }
    }
}

/// Control characters escaped (`\n`, `\u{1e}`): names quoted from a damaged or hostile file
/// (zip entries, pickle strings, tensor names) cannot break a message over several lines.
fn one_line(msg: String) -> String {
    if !msg.chars().any(char::is_control) {
        return msg;
    }
    msg.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_errors_are_one_line_whatever_the_file_holds() {
        let e = Error::format("m.pt", "cannot read a\nb\r\u{1e}c from the archive");
        assert_eq!(
            e.to_string(),
            "m.pt: cannot read a\\nb\\r\\u{1e}c from the archive"
        );
        let e = Error::weights("m", "unexpected tensor x\ny");
        assert_eq!(e.to_string(), "m: unexpected tensor x\\ny");
    }
}
