//! Hostile and damaged weight files (issue 13, "Untrusted weight files"): each is refused
//! with one line that names the problem, never a panic, a stack overflow or gigabytes of
//! memory. The library entry points first, then the CLI (`image --model`,
//! `import checkpoint`, `import openai-clip`).
//!
//! None of these tests allocates much: every limit is hit before the big allocation would be.

mod support;

use std::collections::HashMap;
use std::path::Path;

use assert_cmd::Command;
use clipdenoise::weights::import::{import_checkpoint, import_openai_clip};
use clipdenoise::weights::pickle::read_torch_file;
use clipdenoise::weights::{self, Missing, TensorMap, META_CONFIG};
use support::child::{clipdenoise, RunExt};
use support::{fixture, hostile, stored_entries, write, zeros_f32, zip_bytes, Pickle};
use tch::{Device, Kind, Tensor};

/// The watchdog of one run of the binary on a hostile file.
const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);

fn one_line(e: impl std::fmt::Display) -> String {
    let s = e.to_string();
    assert_eq!(s.lines().count(), 1, "not one line: {s}");
    s
}

fn zeros(shape: &[i64]) -> Tensor {
    Tensor::zeros(shape, (Kind::Float, Device::Cpu))
}

/// The tensors of the tiny-w8 fixture model (float32 state dict).
fn tiny_w8() -> TensorMap {
    weights::read_safetensors(&fixture("tiny-w8/official_state_dict.safetensors"))
        .unwrap()
        .0
}

/// The CLI's stderr for a run that must fail: exactly one line, `error: ...`.
fn cli_fails(args: &[&std::ffi::OsStr]) -> String {
    let out = clipdenoise()
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .run_within(LIMIT);
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_string();
    assert!(!out.status.success(), "exit 0 for {args:?}: {err}");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "stderr is not one line:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn cli_image_with_model(dir: &Path, model: &Path) -> String {
    let out = dir.join("out.png");
    let input = fixture("eval/a-cbsd68-101085.png");
    let err = cli_fails(&[
        "image".as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
        "--device".as_ref(),
        "cpu".as_ref(),
        "--model".as_ref(),
        model.as_os_str(),
    ]);
    assert!(!out.exists());
    err
}

/// `image --model` with at most 2 GB of data memory (`ulimit -d`): a model of width 1024
/// (4.8 GB) cannot be allocated, a small one runs.
fn cli_image_with_model_in_2gb(dir: &Path, model: &Path) -> String {
    let out = dir.join("out-2gb.png");
    let input = fixture("eval/a-cbsd68-101085.png");
    let bin = assert_cmd::cargo::cargo_bin("clipdenoise");
    let run = |model: &Path| {
        Command::new("sh")
            .arg("-c")
            .arg("ulimit -d 2000000 && exec \"$0\" \"$@\"")
            .arg(&bin)
            .arg("image")
            .arg(&input)
            .arg("-o")
            .arg(&out)
            .args(["--force", "--device", "cpu", "--model"])
            .arg(model)
            .env("RUST_BACKTRACE", "1")
            .run_within(LIMIT)
    };
    let ok = run(&fixture("tiny-w8/official_state_dict.safetensors"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    std::fs::remove_file(&out).unwrap();
    let bad = run(model);
    assert!(!out.exists());
    let err = String::from_utf8_lossy(&bad.stderr).trim_end().to_string();
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "stderr is not one line:\n{err}");
    err
}

fn cli_import(dir: &Path, what: &str, input: &Path) -> String {
    let out = dir.join(format!("{what}-out.safetensors"));
    let err = cli_fails(&[
        "import".as_ref(),
        what.as_ref(),
        input.as_os_str(),
        "-o".as_ref(),
        out.as_os_str(),
    ]);
    assert!(!out.exists());
    err
}

// ---------------------------------------------------------------------------------------------
// C1: a config inferred from a tensor of the wrong rank

#[test]
fn c1_a_scalar_conv3_weight_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = tiny_w8();
    t.insert("encoder.conv3.weight".into(), zeros(&[]));
    let e = one_line(weights::infer_config(&t, Path::new("m")).unwrap_err());
    assert!(e.contains("encoder.conv3.weight has shape []"), "{e}");
    let e = one_line(
        weights::build_model(
            &t,
            &HashMap::new(),
            Path::new("m"),
            Device::Cpu,
            Missing::Error,
        )
        .unwrap_err(),
    );
    assert!(e.contains("encoder.conv3.weight"), "{e}");

    // The same through the CLI: a safetensors model without config metadata...
    let model = dir.path().join("scalar.safetensors");
    weights::write_safetensors(&model, &t, HashMap::new()).unwrap();
    let e = cli_image_with_model(dir.path(), &model);
    assert!(e.contains("encoder.conv3.weight has shape []"), "{e}");
    // ... and a checkpoint holding a 0-dimensional encoder.conv3.weight.
    let pickle = Pickle::state_dict(&[("encoder.conv3.weight", "0", 1, &[], &[])]);
    let ckpt = zip_bytes(&[
        ("a/data.pkl", &pickle, false),
        ("a/data/0", &zeros_f32(1), false),
    ]);
    let ckpt = write(dir.path(), "scalar.pth", &ckpt);
    let e = cli_import(dir.path(), "checkpoint", &ckpt);
    assert!(e.contains("encoder.conv3.weight has shape []"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// C2: a valid but huge config (width 1024: 4.8 GB) with small tensors

#[test]
fn c2_a_config_bigger_than_the_tensors_is_refused_before_building() {
    let dir = tempfile::tempdir().unwrap();
    // From metadata: the tiny-w8 tensors under a config of width 1024.
    let meta = HashMap::from([(
        META_CONFIG.to_string(),
        r#"{"width":1024,"blocks":[3,4,6],"aug_level":0.0}"#.to_string(),
    )]);
    let model = dir.path().join("w1024.safetensors");
    weights::write_safetensors(&model, &tiny_w8(), meta).unwrap();
    let e = one_line(weights::load_model(&model, Device::Cpu).unwrap_err());
    assert!(
        e.contains("metadata says width 1024, its tensors are width 8"),
        "{e}"
    );
    let e = cli_image_with_model(dir.path(), &model);
    assert!(e.contains("metadata says width 1024"), "{e}");
    // No model is built before the check: in 2 GB of data memory the CLI gives the same
    // error (a model of width 1024 needs 4.8 GB).
    let e = cli_image_with_model_in_2gb(dir.path(), &model);
    assert!(e.contains("metadata says width 1024"), "{e}");
    // With the tiny-w8 tensors under a config of their own width but more blocks, the first
    // tensor that differs is named.
    let meta = HashMap::from([(
        META_CONFIG.to_string(),
        r#"{"width":8,"blocks":[64,64,64],"aug_level":0.0}"#.to_string(),
    )]);
    weights::write_safetensors(&model, &tiny_w8(), meta).unwrap();
    let e = one_line(weights::load_model(&model, Device::Cpu).unwrap_err());
    assert!(
        e.contains("missing tensor encoder.layer1.1.bn1.bias"),
        "{e}"
    );

    // Inferred: a 4 KB encoder.conv3.weight of shape [1024, 1, 1, 1] says width 1024, one
    // scalar per layer says one block each.
    let mut t = TensorMap::from([("encoder.conv3.weight".to_string(), zeros(&[1024, 1, 1, 1]))]);
    for layer in 1..=3 {
        t.insert(format!("encoder.layer{layer}.0.conv1.weight"), zeros(&[]));
    }
    let e = one_line(
        weights::build_model(
            &t,
            &HashMap::new(),
            Path::new("m"),
            Device::Cpu,
            Missing::Error,
        )
        .unwrap_err(),
    );
    assert!(
        e.contains(
            "missing tensor encoder.bn1.bias (for the model inferred from its tensors: width 1024"
        ),
        "{e}"
    );
    let model = dir.path().join("inferred.safetensors");
    weights::write_safetensors(&model, &t, HashMap::new()).unwrap();
    let e = cli_image_with_model(dir.path(), &model);
    assert!(
        e.contains(
            "missing tensor encoder.bn1.bias (for the model inferred from its tensors: width 1024"
        ),
        "{e}"
    );
    let e = cli_image_with_model_in_2gb(dir.path(), &model);
    assert!(
        e.contains(
            "missing tensor encoder.bn1.bias (for the model inferred from its tensors: width 1024"
        ),
        "{e}"
    );
    let pickle = Pickle::state_dict(&[
        (
            "encoder.conv3.weight",
            "0",
            1024,
            &[1024, 1, 1, 1],
            &[1, 1, 1, 1],
        ),
        ("encoder.layer1.0.conv1.weight", "0", 1024, &[], &[]),
        ("encoder.layer2.0.conv1.weight", "0", 1024, &[], &[]),
        ("encoder.layer3.0.conv1.weight", "0", 1024, &[], &[]),
    ]);
    let ckpt = zip_bytes(&[
        ("a/data.pkl", &pickle, false),
        ("a/data/0", &zeros_f32(1024), false),
    ]);
    let ckpt = write(dir.path(), "w1024.pth", &ckpt);
    let e = cli_import(dir.path(), "checkpoint", &ckpt);
    assert!(
        e.contains(
            "missing tensor encoder.bn1.bias (for the model inferred from its tensors: width 1024"
        ),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// D: nesting deep enough to overflow the stack when dropped

/// A checkpoint whose `data.pkl` (deflated: the file is a few KB) is `pickle`.
fn checkpoint_with_pickle(dir: &Path, name: &str, pickle: &[u8]) -> std::path::PathBuf {
    write(dir, name, &hostile::checkpoint_of_pickle(pickle))
}

#[test]
fn d_a_tuple_nested_a_million_deep_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // (((...(),),)...): EMPTY_TUPLE, then TUPLE1 a million times: a 1 MB pickle.
    let p = checkpoint_with_pickle(dir.path(), "deep.pth", &hostile::nested_tuples(1_000_000));
    let e = one_line(import_checkpoint(&p).unwrap_err());
    assert!(e.contains("nested more than 256 deep"), "{e}");
    let e = cli_import(dir.path(), "checkpoint", &p);
    assert!(e.contains("nested more than"), "{e}");
    let e = cli_import(dir.path(), "openai-clip", &p);
    assert!(e.contains("nested more than"), "{e}");
}

#[test]
fn d_lists_nested_by_appending_after_placement_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = checkpoint_with_pickle(dir.path(), "chain.pth", &hostile::list_chain(100_000));
    let e = one_line(import_checkpoint(&p).unwrap_err());
    assert!(e.contains("after placing it inside another value"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// E: memory amplification

#[test]
fn e_a_zero_stride_view_bigger_than_its_storage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = hostile::zero_stride_view();
    assert!(bytes.len() < 1024, "{}", bytes.len());
    let p = write(dir.path(), "zero-stride.pth", &bytes);
    let e = one_line(read_torch_file(&p, &|_| true).unwrap_err());
    assert!(e.contains("more elements than its storage's 1"), "{e}");
    let e = cli_import(dir.path(), "checkpoint", &p);
    assert!(e.contains("more elements than its storage"), "{e}");
}

#[test]
fn e_a_size_list_shared_by_many_tensors_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let pickle = hostile::shared_size_list();
    assert!(pickle.len() < 1 << 20, "{}", pickle.len());
    let p = checkpoint_with_pickle(dir.path(), "dims.pth", &pickle);
    let e = one_line(import_checkpoint(&p).unwrap_err());
    assert!(e.contains("60000 dimensions, more than 64"), "{e}");
}

#[test]
fn e_a_pickle_that_copies_references_millions_of_times_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // The same pattern goes on as far as the pickle's size allows (stored, not deflated).
    let bytes = zip_bytes(&[("a/data.pkl", &hostile::million_copies(), false)]);
    let p = write(dir.path(), "refs.pth", &bytes);
    let e = one_line(import_checkpoint(&p).unwrap_err());
    assert!(e.contains("builds more than 4000000 values"), "{e}");
}

#[test]
fn e_a_zip_bomb_storage_is_refused_before_it_is_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    // 16 MB of zeros deflated to a few KB, as the storage of one [4M] tensor.
    let bytes = hostile::zip_bomb(4 << 20);
    assert!(bytes.len() < 64 << 10, "{}", bytes.len());
    let p = write(dir.path(), "bomb.pth", &bytes);
    let e = one_line(import_checkpoint(&p).unwrap_err());
    assert!(e.contains("a zip bomb?"), "{e}");
}

#[test]
fn e_many_strided_views_of_one_storage_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    // One 1 MB storage and 64 transposed views of it: each needs its own 1 MB copy.
    let p = write(
        dir.path(),
        "views.pth",
        &hostile::strided_views(512, 64, false),
    );
    let e = one_line(read_torch_file(&p, &|_| true).unwrap_err());
    assert!(e.contains("a strided view of storage 0"), "{e}");
    // A few such views are fine.
    let p = write(
        dir.path(),
        "views3.pth",
        &hostile::strided_views(512, 3, false),
    );
    let f = read_torch_file(&p, &|_| true).unwrap();
    assert_eq!(f.tensors.len(), 3);
}

// ---------------------------------------------------------------------------------------------
// F: damaged data behind a valid zip structure

/// `bytes` with bit `bit` of byte `at` flipped.
fn flipped(bytes: &[u8], at: usize, bit: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= 1 << bit;
    b
}

#[test]
fn f_a_bit_flip_in_any_tensor_storage_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("tiny-w8/net_g_like.pth")).unwrap();
    let storages: Vec<_> = stored_entries(&good)
        .into_iter()
        .filter(|(name, _, size)| name.contains("/data/") && *size > 0)
        .collect();
    assert!(storages.len() > 100, "{}", storages.len());
    let p = dir.path().join("flipped.pth");
    for (i, (name, start, size)) in storages.iter().enumerate() {
        let at = start + (i * 7919) % size;
        std::fs::write(&p, flipped(&good, at, (i % 8) as u8)).unwrap();
        let e = one_line(import_checkpoint(&p).unwrap_err());
        assert!(
            e.contains(name.as_str()) && e.contains("CRC-32 mismatch"),
            "{e}"
        );
    }
    let e = cli_import(dir.path(), "checkpoint", &p);
    assert!(e.contains("CRC-32 mismatch"), "{e}");
}

#[test]
fn f_damage_in_entries_an_import_does_not_use_is_detected_too() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("tiny-w8/clip_like_rn.pt")).unwrap();
    // Entries no importer reads: the traced inputs (stored: the CRC-32 differs) and
    // TorchScript code (deflated: the stream breaks, or the CRC-32 differs).
    for (name, why) in [
        ("clip_like_rn/traced_inputs.pkl", "CRC-32 mismatch"),
        ("clip_like_rn/code/__torch__/___torch_mangle_131.py", ""),
    ] {
        let (_, start, size) = stored_entries(&good)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap();
        let p = write(
            dir.path(),
            "flipped.pt",
            &flipped(&good, start + size / 2, 3),
        );
        let e = one_line(import_openai_clip(&p).unwrap_err());
        assert!(e.contains(name) && e.contains(why), "{e}");
        let e = cli_import(dir.path(), "openai-clip", &p);
        assert!(e.contains(name), "{e}");
    }
    // The undamaged file imports.
    import_openai_clip(&fixture("tiny-w8/clip_like_rn.pt")).unwrap();
}
