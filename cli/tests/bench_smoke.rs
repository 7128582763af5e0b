//! The bench runs end to end and its JSON has every field (no timing assertions here).

mod support;

use support::child::{clipdenoise, RunExt};

#[test]
fn bench_json_has_every_field() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tiny-w8/official_state_dict.safetensors"
    );
    let out = clipdenoise()
        .args([
            "bench",
            "--model",
            model,
            "--size",
            "64x48",
            "--batch-size",
            "2",
            "--frames",
            "3",
        ])
        .args(["--device", "cpu", "--json"])
        .run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "model",
        "preset",
        "device",
        "precision",
        "channels_last",
        "size",
        "format",
        "batch_size",
        "frames",
        "threads",
        "seconds",
        "fps",
        "latency_p50_ms",
        "latency_p99_ms",
        "upload_ms_per_frame",
        "model_ms_per_frame",
        "download_ms_per_frame",
        "peak_rss_mb",
        "peak_gpu_mb",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["frames"], 4, "3 frames round up to 2 whole batches of 2");
    assert_eq!(v["size"], "64x48");
    assert_eq!(
        v["channels_last"], true,
        "channels_last is the default layout"
    );
    assert!(v["fps"].as_f64().unwrap() > 0.0);
    assert!(v["peak_rss_mb"].as_f64().unwrap() > 0.0);
    assert!(v["peak_gpu_mb"].is_null(), "no GPU on the CPU device");
}

#[test]
fn bench_refuses_a_bad_size() {
    let out = clipdenoise().args(["bench", "--size", "64"]).run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WIDTHxHEIGHT"), "{err}");
}
