//! `weights fetch` against a small HTTP server on 127.0.0.1 serving a fixture archive as
//! `/<sha256>/RN50.pt`: full download + conversion, resume with a Range request after an
//! interruption, and a wrong hash that leaves nothing behind.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use clipdenoise::weights::fetch::{fetch, sha256_file, FetchEvent, FetchSpec};
use clipdenoise::weights::{self, TensorMap};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// What the server saw: request path and Range header of each request.
type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

struct Server {
    base: String,
    log: Log,
}

/// Serve `body` at `path` for at most `cuts.len()` requests; request i sends only the first
/// `cuts[i]` bytes of its answer's body (when set) and then drops the connection.
fn serve(body: Vec<u8>, path: String, cuts: Vec<Option<usize>>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let log2 = log.clone();
    std::thread::spawn(move || {
        for (stream, cut) in listener.incoming().zip(cuts) {
            let Ok(stream) = stream else { return };
            let _ = answer(stream, &body, &path, cut, &log2);
        }
    });
    Server { base, log }
}

fn answer(
    mut s: TcpStream,
    body: &[u8],
    path: &str,
    cut: Option<usize>,
    log: &Log,
) -> std::io::Result<()> {
    let mut r = BufReader::new(s.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let req_path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut range = None;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_string());
            }
        }
    }
    log.lock().unwrap().push((req_path.clone(), range.clone()));
    let len = body.len();
    let start = range
        .as_deref()
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
    let (head, data): (String, &[u8]) = if req_path != path {
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".into(),
            &[],
        )
    } else {
        match start {
            Some(st) if st >= len => {
                (format!("HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{len}\r\nContent-Length: 0\r\n"), &[])
            }
            Some(st) => (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {st}-{}/{len}\r\nContent-Length: {}\r\n",
                    len - 1,
                    len - st
                ),
                &body[st..],
            ),
            None => (format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n"), body),
        }
    };
    s.write_all(format!("{head}Connection: close\r\n\r\n").as_bytes())?;
    let data = &data[..cut.unwrap_or(data.len()).min(data.len())];
    s.write_all(data)?;
    s.flush()
}

struct Case {
    bytes: Vec<u8>,
    sha: String,
    cache: tempfile::TempDir,
}

fn case() -> Case {
    let src = fixture("tiny-w8/clip_like_rn.pt");
    Case {
        bytes: std::fs::read(&src).unwrap(),
        sha: sha256_file(&src).unwrap(),
        cache: tempfile::tempdir().unwrap(),
    }
}

fn spec(base: &str, sha: &str) -> FetchSpec {
    FetchSpec {
        url_base: base.to_string(),
        sha256: sha.to_string(),
        file_name: "RN50.pt".into(),
        output_name: "clip-rn50-encoder.safetensors".into(),
    }
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_is_the_fixture_encoder(path: &Path) {
    let (got, meta) = weights::read_safetensors(path).unwrap();
    let want: TensorMap =
        weights::read_safetensors(&fixture("tiny-w8/encoder_from_archive.safetensors"))
            .unwrap()
            .0
            .into_iter()
            .filter(|(k, _)| !k.starts_with("encoder.layer4."))
            .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    for (k, t) in &want {
        assert!(t.equal(&got[k]), "{k} differs");
    }
    assert!(meta[weights::META_SOURCE].contains("RN50.pt"), "{meta:?}");
}

#[test]
fn fetch_downloads_verifies_and_converts() {
    let c = case();
    let server = serve(c.bytes.clone(), format!("/{}/RN50.pt", c.sha), vec![None]);
    let mut events = Vec::new();
    let out = fetch(&spec(&server.base, &c.sha), c.cache.path(), |e| {
        events.push(e)
    })
    .unwrap();

    assert_eq!(out, c.cache.path().join("clip-rn50-encoder.safetensors"));
    assert_is_the_fixture_encoder(&out);
    let n = c.bytes.len() as u64;
    assert_eq!(
        events.first(),
        Some(&FetchEvent::Started {
            total: Some(n),
            resumed_from: 0
        })
    );
    assert!(
        events.contains(&FetchEvent::Progress {
            done: n,
            total: Some(n)
        }),
        "{events:?}"
    );
    assert_eq!(
        events[events.len() - 2..],
        [
            FetchEvent::Verified,
            FetchEvent::Converted { path: out.clone() }
        ]
    );
    assert_eq!(
        *server.log.lock().unwrap(),
        [(format!("/{}/RN50.pt", c.sha), None)]
    );
    assert_eq!(
        listing(c.cache.path()),
        ["RN50.pt", "clip-rn50-encoder.safetensors"]
    );

    // A second fetch finds the verified download in the cache and needs no server.
    let mut events = Vec::new();
    fetch(&spec("http://127.0.0.1:9", &c.sha), c.cache.path(), |e| {
        events.push(e)
    })
    .unwrap();
    assert_eq!(
        events,
        [FetchEvent::Verified, FetchEvent::Converted { path: out }]
    );
}

#[test]
fn an_interrupted_download_resumes_with_a_range_request() {
    let c = case();
    let half = c.bytes.len() / 2;
    // Request 1 drops the connection after half the file; request 2 must ask for the rest.
    let server = serve(
        c.bytes.clone(),
        format!("/{}/RN50.pt", c.sha),
        vec![Some(half), None],
    );
    let s = spec(&server.base, &c.sha);
    let err = fetch(&s, c.cache.path(), |_| {}).unwrap_err().to_string();
    assert!(err.contains("run again to resume"), "{err}");
    let part = c.cache.path().join("RN50.pt.part");
    let kept = std::fs::metadata(&part).unwrap().len() as usize;
    assert!(kept > 0 && kept <= half, "kept {kept} of {half} bytes");
    assert_eq!(std::fs::read(&part).unwrap(), c.bytes[..kept]);

    let mut events = Vec::new();
    let out = fetch(&s, c.cache.path(), |e| events.push(e)).unwrap();
    assert_is_the_fixture_encoder(&out);
    let log = server.log.lock().unwrap().clone();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].1, None);
    assert_eq!(log[1].1.as_deref(), Some(format!("bytes={kept}-").as_str()));
    let n = c.bytes.len() as u64;
    assert_eq!(
        events[0],
        FetchEvent::Started {
            total: Some(n),
            resumed_from: kept as u64
        }
    );
    assert_eq!(sha256_file(&c.cache.path().join("RN50.pt")).unwrap(), c.sha);
    assert!(!part.exists());
}

#[test]
fn a_prepared_part_file_is_resumed() {
    let c = case();
    let half = c.bytes.len() / 2;
    std::fs::write(c.cache.path().join("RN50.pt.part"), &c.bytes[..half]).unwrap();
    let server = serve(c.bytes.clone(), format!("/{}/RN50.pt", c.sha), vec![None]);
    let out = fetch(&spec(&server.base, &c.sha), c.cache.path(), |_| {}).unwrap();
    assert_is_the_fixture_encoder(&out);
    assert_eq!(
        server.log.lock().unwrap()[0].1.as_deref(),
        Some(format!("bytes={half}-").as_str())
    );
}

#[test]
fn a_wrong_hash_is_an_error_and_leaves_nothing_behind() {
    let c = case();
    let wrong = "0".repeat(64);
    let server = serve(c.bytes.clone(), format!("/{wrong}/RN50.pt"), vec![None]);
    let cache = c.cache.path().join("sub");
    let err = fetch(&spec(&server.base, &wrong), &cache, |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("SHA-256 mismatch") && err.contains(&c.sha),
        "{err}"
    );
    assert_eq!(listing(&cache), Vec::<String>::new());
    assert_eq!(server.log.lock().unwrap().len(), 1);
}

#[test]
fn a_missing_file_is_an_http_error() {
    let c = case();
    let server = serve(c.bytes.clone(), "/elsewhere".into(), vec![None]);
    let err = fetch(&spec(&server.base, &c.sha), c.cache.path(), |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 404"), "{err}");
    assert_eq!(listing(c.cache.path()), Vec::<String>::new());
}
