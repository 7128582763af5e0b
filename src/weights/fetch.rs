//! `weights fetch`: download published weights into the user's cache, resume interrupted
//! downloads, verify SHA-256 and convert them into this project's format.
//!
//! `clip-rn50` is OpenAI's CLIP RN50 (`RN50.pt`, whose URL carries its SHA-256); it becomes
//! `<cache>/clip-rn50-encoder.safetensors`, an **encoder-only** weights file: combine it with
//! a trained decoder checkpoint (`clipdenoise import checkpoint net_g_latest.pth --encoder
//! <that file>`) or train a decoder on it. The downloaded `RN50.pt` stays in the cache so a
//! second fetch only converts again.
//!
//! The download goes to `<file>.part`; an interrupted download resumes from there with an HTTP
//! Range request. A file whose hash is wrong is deleted and reported as an error.
//! Progress is reported through [`FetchEvent`]s; rendering them is the caller's business.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use super::import::{import_openai_clip, openai_clip_provenance, save_imported};
pub use super::resolve::{cache_dir, ENV_CACHE_DIR};
use super::Missing;
use crate::error::{Error, Result};

/// Environment variable overriding the download base URL (the path after it stays
/// `<sha256>/<file name>`).
pub const ENV_BASE_URL: &str = "CLIPDENOISE_WEIGHTS_BASE_URL";
/// Where OpenAI publishes the CLIP models.
pub const OPENAI_BASE_URL: &str = "https://openaipublic.azureedge.net/clip/models";
/// SHA-256 of OpenAI's `RN50.pt` (also its URL path segment).
pub const CLIP_RN50_SHA256: &str =
    "afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762";
/// The names `weights fetch` knows.
pub const KNOWN: &[&str] = &["clip-rn50"];

const CHUNK: usize = 1 << 20;

/// What to download and what to call the converted file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchSpec {
    /// Base URL; the file is at `<url_base>/<sha256>/<file_name>`.
    pub url_base: String,
    /// Expected SHA-256 of the download, lower-case hex.
    pub sha256: String,
    /// Name of the downloaded file (also its name in the cache).
    pub file_name: String,
    /// Name of the converted weights file in the cache.
    pub output_name: String,
}

impl FetchSpec {
    /// OpenAI's CLIP RN50 from its official location.
    pub fn clip_rn50() -> FetchSpec {
        FetchSpec {
            url_base: OPENAI_BASE_URL.into(),
            sha256: CLIP_RN50_SHA256.into(),
            file_name: "RN50.pt".into(),
            output_name: "clip-rn50-encoder.safetensors".into(),
        }
    }

    /// A spec by name (see [`KNOWN`]).
    pub fn by_name(name: &str) -> Result<FetchSpec> {
        match name {
            "clip-rn50" => Ok(FetchSpec::clip_rn50()),
            _ => Err(Error::Input(format!(
                "unknown weights '{name}' (known: {})",
                KNOWN.join(", ")
            ))),
        }
    }

    /// The same file from another server (a mirror, or a test server).
    pub fn with_base_url(mut self, url_base: &str) -> FetchSpec {
        self.url_base = url_base.to_string();
        self
    }

    pub fn url(&self) -> String {
        format!(
            "{}/{}/{}",
            self.url_base.trim_end_matches('/'),
            self.sha256,
            self.file_name
        )
    }
}

/// Progress of [`fetch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// The download starts (`resumed_from` > 0: continuing a `.part` file); `total` in bytes
    /// when the server says.
    Started {
        total: Option<u64>,
        resumed_from: u64,
    },
    /// `done` bytes of `total` are on disk.
    Progress { done: u64, total: Option<u64> },
    /// The file (downloaded now or found in the cache) has the expected SHA-256.
    Verified,
    /// The converted weights file is written.
    Converted { path: PathBuf },
}

/// Where `fetch` puts the converted file of `spec`.
pub fn output_path(spec: &FetchSpec, cache_dir: &Path) -> PathBuf {
    cache_dir.join(&spec.output_name)
}

/// Download `spec` into `cache_dir` (resuming a `.part` file), verify its SHA-256, convert it
/// with [`import_openai_clip`] and write the encoder-only weights file. Returns its path.
pub fn fetch(
    spec: &FetchSpec,
    cache_dir: &Path,
    mut on_event: impl FnMut(FetchEvent),
) -> Result<PathBuf> {
    std::fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let file = cache_dir.join(&spec.file_name);
    if !(file.is_file() && sha256_file(&file)? == spec.sha256) {
        remove_if_exists(&file)?;
        let part = part_path(&file);
        download(&spec.url(), &part, &mut on_event)?;
        let got = sha256_file(&part)?;
        if got != spec.sha256 {
            remove_if_exists(&part)?;
            return Err(Error::Download(format!(
                "{}: SHA-256 mismatch (expected {}, got {got}); the download was deleted",
                spec.url(),
                spec.sha256
            )));
        }
        std::fs::rename(&part, &file).map_err(|e| Error::io(&file, e))?;
    }
    on_event(FetchEvent::Verified);
    let out = output_path(spec, cache_dir);
    let tensors = import_openai_clip(&file)?;
    save_imported(
        &out,
        &tensors,
        &file,
        &openai_clip_provenance(&file),
        Missing::DecoderMayBeMissing,
    )?;
    on_event(FetchEvent::Converted { path: out.clone() });
    Ok(out)
}

fn part_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".part");
    PathBuf::from(s)
}

fn remove_if_exists(p: &Path) -> Result<()> {
    match std::fs::remove_file(p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(p, e)),
        _ => Ok(()),
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Download `url` into `part`, continuing what `part` already holds.
fn download(url: &str, part: &Path, on_event: &mut impl FnMut(FetchEvent)) -> Result<()> {
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    // Byte ranges and lengths must refer to the file itself, not a compressed transfer.
    let mut req = agent().get(url).header("Accept-Encoding", "identity");
    if have > 0 {
        req = req.header("Range", format!("bytes={have}-"));
    }
    let mut resp = req
        .call()
        .map_err(|e| Error::Download(format!("{url}: {e}")))?;
    let status = resp.status().as_u16();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let encoded = header("content-encoding").is_some_and(|v| !v.eq_ignore_ascii_case("identity"));
    let length: Option<u64> = header("content-length")
        .and_then(|v| v.trim().parse().ok())
        .filter(|_| !encoded);
    let start = match status {
        206 if content_range_start(header("content-range").as_deref()) == Some(have) => have,
        206 => {
            return Err(Error::Download(format!(
                "{url}: the server answered the wrong range"
            )))
        }
        200 => 0,
        // The .part already holds the whole file; the hash check decides.
        416 if have > 0 => return Ok(()),
        s => return Err(Error::Download(format!("{url}: HTTP {s}"))),
    };
    let total = length.map(|l| l + start);
    on_event(FetchEvent::Started {
        total,
        resumed_from: start,
    });
    let mut out = OpenOptions::new()
        .create(true)
        .write(true)
        .append(start > 0)
        .truncate(start == 0)
        .open(part)
        .map_err(|e| Error::io(part, e))?;
    let mut body = resp.body_mut().as_reader();
    let mut buf = vec![0u8; CHUNK];
    let mut done = start;
    loop {
        let n = body.read(&mut buf).map_err(|e| {
            Error::Download(format!(
                "{url}: interrupted after {done} bytes ({e}); run again to resume"
            ))
        })?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(|e| Error::io(part, e))?;
        done += n as u64;
        on_event(FetchEvent::Progress { done, total });
    }
    out.sync_all().map_err(|e| Error::io(part, e))?;
    match total {
        Some(t) if t != done => Err(Error::Download(format!(
            "{url}: got {done} of {t} bytes; run again to resume"
        ))),
        _ => Ok(()),
    }
}

/// The first byte of `Content-Range: bytes <first>-<last>/<total>`.
fn content_range_start(v: Option<&str>) -> Option<u64> {
    v?.trim()
        .strip_prefix("bytes ")?
        .split('-')
        .next()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_names() {
        let s = FetchSpec::clip_rn50();
        assert_eq!(
            s.url(),
            "https://openaipublic.azureedge.net/clip/models/afeb0e10f9e5a86da6080e35cf09123aca3b358a0c3e3b6c78a7b63bc04b6762/RN50.pt"
        );
        assert_eq!(
            s.clone().with_base_url("http://127.0.0.1:9/x/").url(),
            format!("http://127.0.0.1:9/x/{CLIP_RN50_SHA256}/RN50.pt")
        );
        assert!(FetchSpec::by_name("rn101")
            .unwrap_err()
            .to_string()
            .contains("clip-rn50"));
        assert_eq!(content_range_start(Some("bytes 100-199/200")), Some(100));
        assert_eq!(content_range_start(Some("items 1-2/3")), None);
        assert_eq!(
            cache_dir(Some(Path::new("/x"))).unwrap(),
            PathBuf::from("/x")
        );
    }
}
