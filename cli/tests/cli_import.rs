//! The real `clipdenoise` binary: `import openai-clip`, `import checkpoint` and
//! `weights fetch` on fixtures and on corrupt or hostile files.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;

use assert_cmd::Command;
use clipdenoise::weights::{self, fetch::CLIP_RN50_SHA256, Missing};
use support::child::clipdenoise as bin;
use support::fixture;

fn stderr_of_failure(cmd: &mut Command) -> String {
    let out = cmd.assert().failure().get_output().clone();
    String::from_utf8_lossy(&out.stderr).trim_end().to_string()
}

/// Run, expect failure, return stderr: exactly one line, the error.
fn fails(cmd: &mut Command) -> String {
    let err = stderr_of_failure(cmd);
    assert_eq!(err.lines().count(), 1, "stderr is not one line:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// Run, expect failure after progress lines: the last line is the only error line.
fn fails_last_line(cmd: &mut Command) -> String {
    let err = stderr_of_failure(cmd);
    assert_eq!(
        err.lines().filter(|l| l.starts_with("error")).count(),
        1,
        "{err}"
    );
    let last = err.lines().last().unwrap_or("").to_string();
    assert!(last.starts_with("error: "), "{err}");
    last
}

#[test]
fn import_openai_clip_writes_the_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enc.safetensors");
    bin()
        .args(["import", "openai-clip"])
        .arg(fixture("tiny-w16/clip_like_rn.pt"))
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let (got, meta) = weights::read_safetensors(&out).unwrap();
    let (want, _) =
        weights::read_safetensors(&fixture("tiny-w16/encoder_from_archive.safetensors")).unwrap();
    let want: Vec<_> = want
        .into_iter()
        .filter(|(k, _)| !k.starts_with("encoder.layer4."))
        .collect();
    assert_eq!(got.len(), want.len());
    for (k, t) in &want {
        assert!(t.equal(&got[k]), "{k} differs");
    }
    assert!(
        meta[weights::META_SOURCE].contains("clip_like_rn.pt"),
        "{meta:?}"
    );
    let cfg = weights::config_from_metadata(&meta, &out).unwrap().unwrap();
    assert_eq!((cfg.width, cfg.blocks), (16, [2, 2, 2]));
    // Without a decoder it is not a model for inference.
    let e = weights::load_model(&out, tch::Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(e.contains("holds only an encoder"), "{e}");
    let _ = weights::build_model(
        &got,
        &meta,
        &out,
        tch::Device::Cpu,
        Missing::DecoderMayBeMissing,
    )
    .unwrap();

    // The output exists now: refused without --force, replaced with it.
    let err = fails(
        bin()
            .args(["import", "openai-clip"])
            .arg(fixture("tiny-w8/clip_like_rn.pt"))
            .arg("-o")
            .arg(&out),
    );
    assert!(err.contains("--force"), "{err}");
    bin()
        .args(["import", "openai-clip", "--force"])
        .arg(fixture("tiny-w8/clip_like_rn.pt"))
        .arg("-o")
        .arg(&out)
        .assert()
        .success();
    let (_, meta) = weights::read_safetensors(&out).unwrap();
    assert_eq!(
        weights::config_from_metadata(&meta, &out)
            .unwrap()
            .unwrap()
            .width,
        8
    );
}

#[test]
fn import_openai_clip_refuses_corrupt_files_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("enc.safetensors");
    let text = dir.path().join("RN50.pt");
    std::fs::write(&text, "<html>404 not found</html>\n").unwrap();
    let err = fails(
        bin()
            .args(["import", "openai-clip"])
            .arg(&text)
            .arg("-o")
            .arg(&out),
    );
    assert!(
        err.contains("RN50.pt") && err.contains("not a PyTorch file"),
        "{err}"
    );
    assert!(!out.exists());

    let bytes = std::fs::read(fixture("tiny-w8/clip_like_rn.pt")).unwrap();
    let cut = dir.path().join("cut.pt");
    std::fs::write(&cut, &bytes[..bytes.len() * 2 / 3]).unwrap();
    let err = fails(
        bin()
            .args(["import", "openai-clip"])
            .arg(&cut)
            .arg("-o")
            .arg(&out),
    );
    assert!(err.contains("truncated or corrupt zip"), "{err}");

    let evil = dir.path().join("evil.pt");
    let mut z = zip::ZipWriter::new(std::fs::File::create(&evil).unwrap());
    z.start_file("evil/data.pkl", zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(b"cos\nsystem\n(S'echo pwned'\ntR.").unwrap();
    z.finish().unwrap();
    let out_cmd = bin()
        .args(["import", "openai-clip"])
        .arg(&evil)
        .arg("-o")
        .arg(&out)
        .assert()
        .failure();
    let stdout = String::from_utf8_lossy(&out_cmd.get_output().stdout).to_string();
    assert!(!stdout.contains("pwned"));
    let err = fails(
        bin()
            .args(["import", "openai-clip"])
            .arg(&evil)
            .arg("-o")
            .arg(&out),
    );
    assert!(err.contains("os.system"), "{err}");

    let err = fails(
        bin()
            .args(["import", "openai-clip"])
            .arg(dir.path().join("nope.pt"))
            .arg("-o")
            .arg(&out),
    );
    assert!(err.contains("nope.pt"), "{err}");
    assert!(!out.exists());
    let mut left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["RN50.pt", "cut.pt", "evil.pt"]); // the inputs only: nothing written
}

#[test]
fn import_checkpoint_with_and_without_encoder() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.safetensors");
    bin()
        .args(["import", "checkpoint"])
        .arg(fixture("tiny-w8/net_g_like.pth"))
        .arg("-o")
        .arg(&model)
        .assert()
        .success();
    let m = weights::load_model(&model, tch::Device::Cpu).unwrap();
    assert_eq!(m.model.config.width, 8);
    assert!(m.provenance.source.contains("net_g_like.pth"));

    // With the CLIP archive as encoder (converted on the fly).
    let model2 = dir.path().join("model2.safetensors");
    bin()
        .args(["import", "checkpoint"])
        .arg(fixture("tiny-w8/net_g_like.pth"))
        .arg("--encoder")
        .arg(fixture("tiny-w8/clip_like_rn.pt"))
        .arg("-o")
        .arg(&model2)
        .assert()
        .success();
    let (a, _) = weights::read_safetensors(&model).unwrap();
    let (b, _) = weights::read_safetensors(&model2).unwrap();
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|(k, t)| t.equal(&b[k])));

    // An encoder of another model size does not fit.
    let bad = dir.path().join("bad.safetensors");
    let err = fails(
        bin()
            .args(["import", "checkpoint"])
            .arg(fixture("tiny-w8/net_g_like.pth"))
            .arg("--encoder")
            .arg(fixture("tiny-w16/clip_like_rn.pt"))
            .arg("-o")
            .arg(&bad),
    );
    assert!(err.contains("shape"), "{err}");
    assert!(!bad.exists());
}

#[test]
fn every_subcommand_has_a_usage_example() {
    let cases: [&[&str]; 6] = [
        &["import"],
        &["import", "openai-clip"],
        &["import", "checkpoint"],
        &["weights"],
        &["weights", "fetch"],
        &["weights", "average"],
    ];
    for args in cases {
        let out = bin()
            .args(args)
            .arg("--help")
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        let help = String::from_utf8_lossy(&out);
        let examples = help.split_once("\nExample").map(|(_, e)| e).unwrap_or("");
        let line = format!("clipdenoise {}", args.join(" "));
        assert!(
            examples.contains(&line),
            "no example of `{line}` in:\n{help}"
        );
    }
}

/// `weights average`: the shipped model averaged with itself is itself (a loadable model
/// file); a --shares list of the wrong length or an input that is not weights is one error
/// line, and no output is written.
#[test]
fn weights_average_writes_the_mean_and_refuses_bad_input() {
    let shipped = "../weights/clipdenoise-tiny.safetensors";
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("mean.safetensors");
    bin()
        .args(["weights", "average", shipped, shipped, "-o"])
        .arg(&out)
        .args(["--shares", "1,2.5"])
        .assert()
        .success();
    let (want, _) = weights::read_safetensors(std::path::Path::new(shipped)).unwrap();
    let (got, _) = weights::read_safetensors(&out).unwrap();
    assert_eq!(want.len(), got.len());
    for (name, t) in &want {
        let diff = (t - &got[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name} changed by {diff}");
    }
    weights::load_model(&out, tch::Device::Cpu).unwrap();

    let bad = dir.path().join("bad.safetensors");
    let e = fails(
        bin()
            .args(["weights", "average", shipped, shipped, "-o"])
            .arg(&bad)
            .args(["--shares", "1,2,3"]),
    );
    assert!(e.contains("--shares has 3 values for 2 input files"), "{e}");
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not weights").unwrap();
    let e = fails(
        bin()
            .args(["weights", "average", shipped])
            .arg(&text)
            .arg("-o")
            .arg(&bad),
    );
    assert!(
        e.contains("notes.txt") && e.contains("not a valid safetensors"),
        "{e}"
    );
    assert!(!bad.exists(), "no output after a refusal");
}

/// The real name has a fixed hash: serving another file under it must fail verification.
#[test]
fn weights_fetch_rejects_a_file_with_the_wrong_hash() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let body = std::fs::read(fixture("tiny-w8/clip_like_rn.pt")).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut req = Vec::new();
        let mut buf = [0u8; 1024];
        while !req.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
        String::from_utf8_lossy(&req)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    });
    let cache = tempfile::tempdir().unwrap();
    let err = fails_last_line(
        bin()
            .args(["weights", "fetch", "clip-rn50", "--cache-dir"])
            .arg(cache.path())
            .env("CLIPDENOISE_WEIGHTS_BASE_URL", &base),
    );
    assert!(err.contains("SHA-256 mismatch"), "{err}");
    let request = server.join().unwrap();
    assert_eq!(request, format!("GET /{CLIP_RN50_SHA256}/RN50.pt HTTP/1.1"));
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

/// `info` says whether the paper's model is here: OpenAI's encoder (fetched into the cache)
/// and a clip-rn50 denoiser, with where the authors publish their checkpoint and the commands.
#[test]
fn info_says_which_parts_of_the_papers_model_are_present() {
    let cache = tempfile::tempdir().unwrap();
    let models = tempfile::tempdir().unwrap();
    let info = || {
        let out = bin()
            .arg("info")
            .env("CLIPDENOISE_CACHE_DIR", cache.path())
            .env("CLIPDENOISE_MODEL_DIR", models.path())
            .timeout(std::time::Duration::from_secs(600))
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = info();
    assert!(
        text.contains("OpenAI CLIP RN50 encoder: missing (clipdenoise weights fetch clip-rn50)"),
        "{text}"
    );
    assert!(text.contains("denoiser: missing"), "{text}");
    assert!(
        text.contains("https://github.com/alwaysuu/CLIPDenoising")
            && text.contains("clipdenoise import checkpoint net_g_latest.pth --encoder"),
        "{text}"
    );
    let encoder = cache.path().join("clip-rn50-encoder.safetensors");
    std::fs::write(&encoder, b"").unwrap();
    let text = info();
    assert!(
        text.contains(&format!(
            "OpenAI CLIP RN50 encoder: present ({})",
            encoder.display()
        )),
        "{text}"
    );
}
