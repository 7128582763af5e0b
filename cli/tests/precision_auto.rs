//! `--precision auto`: the bench reports what auto resolved to and both timings; a test-only
//! override forces which precision counts as faster, so that both sides of the choice and the
//! quality check refusing bf16 run on any machine (no timing assertions).

mod support;

use support::child::{clipdenoise, RunExt};

/// `clipdenoise bench --precision auto --json` on the tiny fixture, with `env` set.
fn bench_auto(env: &[(&str, &str)]) -> serde_json::Value {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tiny-w8/official_state_dict.safetensors"
    );
    let mut cmd = clipdenoise();
    cmd.args([
        "bench", "--model", model, "--size", "64x48", "--frames", "2",
    ])
    .args(["--device", "cpu", "--precision", "auto", "--json"])
    .env_remove("CLIPDENOISE_AUTO_PRECISION_FORCE")
    .env_remove("CLIPDENOISE_AUTO_PRECISION_MAX_LOSS_DB");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.run();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn assert_timed(v: &serde_json::Value) {
    assert_eq!(v["precision_source"], "auto", "{v}");
    assert!(v["auto_fp32_ms"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["auto_bf16_ms"].as_f64().unwrap() > 0.0, "{v}");
    let loss = v["auto_bf16_loss_db"].as_f64().unwrap();
    assert!(loss.is_finite() && loss >= 0.0, "{v}");
}

#[test]
fn auto_resolves_to_fp32_or_bf16_and_says_so() {
    let v = bench_auto(&[]);
    let p = v["precision"].as_str().unwrap();
    assert!(p == "fp32" || p == "bf16", "auto resolved to {p}: {v}");
    assert_timed(&v);
}

#[test]
fn auto_keeps_bf16_when_faster_and_within_the_loss() {
    let v = bench_auto(&[
        ("CLIPDENOISE_AUTO_PRECISION_FORCE", "bf16"),
        ("CLIPDENOISE_AUTO_PRECISION_MAX_LOSS_DB", "100"),
    ]);
    assert_eq!(v["precision"], "bf16", "{v}");
    assert_timed(&v);
}

#[test]
fn auto_keeps_fp32_when_faster() {
    let v = bench_auto(&[("CLIPDENOISE_AUTO_PRECISION_FORCE", "fp32")]);
    assert_eq!(v["precision"], "fp32", "{v}");
    assert_timed(&v);
}

#[test]
fn quality_check_refuses_bf16_above_the_loss() {
    // bf16 rounds differently from fp32 on a textured noisy frame, so its loss is above 0:
    // with bf16 forced faster and a threshold of 0, the quality check must refuse it.
    let v = bench_auto(&[
        ("CLIPDENOISE_AUTO_PRECISION_FORCE", "bf16"),
        ("CLIPDENOISE_AUTO_PRECISION_MAX_LOSS_DB", "0"),
    ]);
    let loss = v["auto_bf16_loss_db"].as_f64().unwrap();
    assert!(
        loss > 0.0,
        "bf16 matches fp32 exactly on the synthetic frame: {v}"
    );
    assert_eq!(v["precision"], "fp32", "{v}");
    assert!(v["auto_reason"].as_str().unwrap().contains("loses"), "{v}");
}

#[test]
fn explicit_precisions_are_set_not_chosen() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tiny-w8/official_state_dict.safetensors"
    );
    for p in ["fp32", "bf16"] {
        let out = clipdenoise()
            .args([
                "bench", "--model", model, "--size", "64x48", "--frames", "2",
            ])
            .args(["--device", "cpu", "--precision", p, "--json"])
            .env("CLIPDENOISE_AUTO_PRECISION_FORCE", "bf16")
            .run();
        assert!(out.status.success());
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["precision"], p, "{v}");
        assert_eq!(v["precision_source"], "set", "{v}");
        assert!(v["auto_fp32_ms"].is_null(), "{v}");
    }
}

#[test]
fn bench_text_prints_the_choice_and_both_timings() {
    let model = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/tiny-w8/official_state_dict.safetensors"
    );
    let out = clipdenoise()
        .args([
            "bench", "--model", model, "--size", "64x48", "--frames", "2",
        ])
        .args(["--device", "cpu", "--precision", "auto"])
        .env("CLIPDENOISE_AUTO_PRECISION_FORCE", "fp32")
        .run();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("precision auto chose fp32: fp32 ") && text.contains(" ms, bf16 "),
        "{text}"
    );
}

#[test]
fn info_says_what_auto_does() {
    let out = clipdenoise().arg("info").run();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("precision auto (the default): "))
        .unwrap_or_else(|| panic!("no precision auto line:\n{text}"));
    assert!(
        line.contains("fp32 or bf16, whichever is faster") || line.contains("bf16 on Cuda"),
        "{line}"
    );
}
