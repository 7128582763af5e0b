//! The importers read OpenAI's TorchScript CLIP archive and the authors' checkpoints exactly
//! as the reference loader does, and refuse anything else (fixtures: tests/fixtures/README.md).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use clipdenoise::model::Config;
use clipdenoise::weights::import::{compose, import_checkpoint, import_openai_clip, read_encoder};
use clipdenoise::weights::pickle::{read_torch_file, ArchiveKind};
use clipdenoise::weights::{self, Missing, TensorMap};
use clipdenoise::ClipDenoise;
use tch::{nn, Device, Kind, Tensor};

const DIRS: [&str; 2] = ["tiny-w16", "tiny-w8"];

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn read(name: &str) -> TensorMap {
    weights::read_safetensors(&fixture(name)).unwrap().0
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    (a - b).abs().max().double_value(&[])
}

/// Features and output of a model built from `tensors` match the reference's `io.safetensors`.
fn check_io(tensors: &TensorMap, dir: &str) {
    let path = fixture(dir);
    let m =
        weights::build_model(tensors, &HashMap::new(), &path, Device::Cpu, Missing::Error).unwrap();
    let io = read(&format!("{dir}/io.safetensors"));
    let _g = tch::no_grad_guard();
    let x = &io["batch_input"];
    for (k, f) in m.model.features(x, false).iter().enumerate() {
        let d = max_abs(f, &io[&format!("batch_feature_{k}")]);
        assert!(d < 1e-4, "{dir}: feature {k} differs by {d}");
    }
    let d = max_abs(&m.model.forward_t(x, false), &io["batch_output"]);
    assert!(d < 1e-4, "{dir}: output differs by {d}");
}

fn assert_bitwise_equal(a: &TensorMap, b: &TensorMap, what: &str) {
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        b.keys().collect::<Vec<_>>(),
        "{what}: key sets differ"
    );
    for (k, t) in a {
        assert_eq!(t.kind(), b[k].kind(), "{what}: {k} dtype");
        assert!(t.equal(&b[k]), "{what}: {k} differs");
    }
}

fn without_layer4(t: TensorMap) -> TensorMap {
    t.into_iter()
        .filter(|(k, _)| !k.starts_with("encoder.layer4."))
        .collect()
}

#[test]
fn openai_clip_import_equals_the_reference_loader() {
    for dir in DIRS {
        let got = import_openai_clip(&fixture(&format!("{dir}/clip_like_rn.pt"))).unwrap();
        let want = without_layer4(read(&format!("{dir}/encoder_from_archive.safetensors")));
        assert!(
            want.len() > 50,
            "{dir}: fixture has only {} tensors",
            want.len()
        );
        assert_bitwise_equal(&got, &want, dir);
        assert_eq!(got["encoder.bn1.num_batches_tracked"].kind(), Kind::Int64);
        assert_eq!(got["encoder.conv1.weight"].kind(), Kind::Float);
    }
}

#[test]
fn checkpoint_import_reproduces_the_reference() {
    for dir in DIRS {
        let got = import_checkpoint(&fixture(&format!("{dir}/net_g_like.pth"))).unwrap();
        let want = without_layer4(read(&format!("{dir}/official_state_dict.safetensors")));
        assert_bitwise_equal(&got, &want, dir);
        check_io(&got, dir);
    }
}

#[test]
fn clip_archive_plus_decoder_reproduces_the_reference() {
    for dir in DIRS {
        let enc = import_openai_clip(&fixture(&format!("{dir}/clip_like_rn.pt"))).unwrap();
        let decoder: TensorMap = read(&format!("{dir}/official_state_dict.safetensors"))
            .into_iter()
            .filter(|(k, _)| !k.starts_with("encoder."))
            .collect();
        let model = compose(Some(decoder), Some(enc), false).unwrap();
        check_io(&model, dir);
    }
}

#[test]
fn with_both_files_batchnorm_statistics_come_from_the_checkpoint() {
    let dir = "tiny-w8";
    let ckpt = import_checkpoint(&fixture(&format!("{dir}/net_g_like.pth"))).unwrap();
    // The checkpoint's encoder weights are wrong, its BN statistics right; the encoder file's
    // weights are right, its BN statistics wrong. Only the documented merge reproduces the output.
    let mut bad_ckpt = TensorMap::new();
    let mut bad_enc = TensorMap::new();
    for (k, t) in &ckpt {
        let bn_buffer = k.ends_with("running_mean") || k.ends_with("running_var");
        let enc_weight = k.starts_with("encoder.") && !bn_buffer && t.is_floating_point();
        bad_ckpt.insert(
            k.clone(),
            if enc_weight { t.zeros_like() } else { t.copy() },
        );
        if k.starts_with("encoder.") {
            bad_enc.insert(k.clone(), if bn_buffer { t * 3.0 + 1.0 } else { t.copy() });
        }
    }
    let model = compose(Some(bad_ckpt), Some(bad_enc), false).unwrap();
    assert!(model["encoder.bn2.running_var"].equal(&ckpt["encoder.bn2.running_var"]));
    assert!(model["encoder.conv2.weight"].equal(&ckpt["encoder.conv2.weight"]));
    check_io(&model, dir);
}

#[test]
fn an_encoder_alone_gets_a_fresh_decoder_only_for_training() {
    let enc = read_encoder(&fixture("tiny-w8/clip_like_rn.pt")).unwrap();
    let err = compose(None, Some(enc.shallow()), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("decoder checkpoint"), "{err}");
    let model = compose(None, Some(enc.shallow()), true).unwrap();
    assert!(
        model.contains_key("last.weight")
            && model.contains_key("up_path.0.conv_block.block.0.weight")
    );
    assert!(model["encoder.layer1.0.conv1.weight"].equal(&enc["encoder.layer1.0.conv1.weight"]));
    let m = weights::build_model(
        &model,
        &HashMap::new(),
        Path::new("x"),
        Device::Cpu,
        Missing::Error,
    )
    .unwrap();
    assert_eq!(m.model.config.width, 8);
}

trait Shallow {
    fn shallow(&self) -> TensorMap;
}
impl Shallow for TensorMap {
    fn shallow(&self) -> TensorMap {
        self.iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect()
    }
}

#[test]
fn imported_files_round_trip_with_config_and_provenance() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny-w16/net_g_like.pth");
    let tensors = import_checkpoint(&input).unwrap();
    let out = dir.path().join("model.safetensors");
    let prov = weights::import::checkpoint_provenance(&input, None);
    let cfg =
        weights::import::save_imported(&out, &tensors, &input, &prov, Missing::Error).unwrap();
    assert_eq!((cfg.width, cfg.blocks), (16, [2, 2, 2]));
    let m = weights::load_model(&out, Device::Cpu).unwrap();
    assert!(
        m.provenance.source.contains("net_g_like.pth"),
        "{}",
        m.provenance.source
    );
    assert_eq!(m.model.config, cfg);
    // An encoder-only file is written only when asked for, and then has no decoder.
    let enc = import_openai_clip(&fixture("tiny-w16/clip_like_rn.pt")).unwrap();
    let enc_out = dir.path().join("enc.safetensors");
    let err =
        weights::import::save_imported(&enc_out, &enc, &input, &prov, Missing::Error).unwrap_err();
    assert!(err.to_string().contains("holds only an encoder"), "{err}");
    assert!(!enc_out.exists());
    weights::import::save_imported(&enc_out, &enc, &input, &prov, Missing::DecoderMayBeMissing)
        .unwrap();
    assert_eq!(
        weights::read_safetensors(&enc_out).unwrap().0.len(),
        enc.len()
    );
}

#[test]
fn clip_rn50_preset_matches_the_reference_manifest() {
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("rn50_manifest.json")).unwrap())
            .unwrap();
    let sd = manifest["clipdenoising_rn50_state_dict"]
        .as_object()
        .unwrap();
    let want: Vec<(String, Vec<i64>, Kind)> = sd
        .iter()
        .filter(|(k, _)| !k.starts_with("encoder.layer4."))
        .map(|(k, v)| {
            let shape = v["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap())
                .collect();
            let kind = match v["dtype"].as_str().unwrap() {
                "float32" => Kind::Float,
                "int64" => Kind::Int64,
                other => panic!("unexpected dtype {other}"),
            };
            (k.clone(), shape, kind)
        })
        .collect();
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = ClipDenoise::new(&vs.root(), &Config::clip_rn50());
    let mut got: Vec<(String, Vec<i64>, Kind)> = vs
        .variables()
        .into_iter()
        .map(|(k, t)| (k, t.size(), t.kind()))
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want_sorted = want.clone();
    want_sorted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), want_sorted.len());
    assert_eq!(got, want_sorted);

    let is_param = |k: &str| {
        !(k.ends_with("running_mean")
            || k.ends_with("running_var")
            || k.ends_with("num_batches_tracked"))
    };
    let params: i64 = got
        .iter()
        .filter(|(k, _, _)| is_param(k))
        .map(|(_, s, _)| s.iter().product::<i64>())
        .sum();
    assert_eq!(params, 19_551_456);
    assert_eq!(
        params,
        manifest["params_used_without_layer4"].as_i64().unwrap()
    );
    let decoder: i64 = got
        .iter()
        .filter(|(k, _, _)| !k.starts_with("encoder."))
        .map(|(_, s, _)| s.iter().product::<i64>())
        .sum();
    assert_eq!(decoder, manifest["params_trainable"].as_i64().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Corrupt and hostile files

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn zip_with(dir: &Path, name: &str, entries: &[(&str, &[u8])]) -> PathBuf {
    let p = dir.join(name);
    let mut z = zip::ZipWriter::new(std::fs::File::create(&p).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (n, b) in entries {
        z.start_file(*n, opts).unwrap();
        z.write_all(b).unwrap();
    }
    z.finish().unwrap();
    p
}

#[test]
fn a_pickle_that_calls_a_function_is_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let pickle = format!("cos\nsystem\n(S'touch {}'\ntR.", marker.display());
    let p = zip_with(
        dir.path(),
        "evil.pth",
        &[("evil/data.pkl", pickle.as_bytes())],
    );
    for err in [
        import_checkpoint(&p).unwrap_err(),
        import_openai_clip(&p).unwrap_err(),
    ] {
        let msg = err.to_string();
        assert!(
            msg.contains("os.system") && msg.contains("refusing"),
            "{msg}"
        );
        assert_eq!(msg.lines().count(), 1, "{msg}");
    }
    let builtins = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1\x85R.";
    let p = zip_with(dir.path(), "eval.pth", &[("eval/data.pkl", builtins)]);
    assert!(import_checkpoint(&p)
        .unwrap_err()
        .to_string()
        .contains("builtins.eval"));
    assert!(!marker.exists(), "the pickle's command ran");
}

#[test]
fn corrupt_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("tiny-w8/net_g_like.pth")).unwrap();

    let p = write_file(dir.path(), "half.pth", &good[..good.len() / 2]);
    let e = import_checkpoint(&p).unwrap_err().to_string();
    assert!(e.contains("truncated or corrupt zip"), "{e}");

    let random: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let p = write_file(dir.path(), "random.pth", &random);
    let e = import_checkpoint(&p).unwrap_err().to_string();
    assert!(
        e.contains("not a PyTorch file") && e.contains("random.pth"),
        "{e}"
    );

    let p = write_file(dir.path(), "notes.pt", b"these are not weights\n");
    let e = import_openai_clip(&p).unwrap_err().to_string();
    assert!(e.contains("no zip signature"), "{e}");

    let p = write_file(dir.path(), "empty.pt", b"");
    assert!(import_openai_clip(&p)
        .unwrap_err()
        .to_string()
        .contains("empty"));

    // A zip whose pickle names a storage that is not in the archive.
    let pickle = b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQK\x00K\x04\x85K\x01\x85\x89NtRs.";
    let p = zip_with(dir.path(), "nostorage.pth", &[("a/data.pkl", pickle)]);
    let e = import_checkpoint(&p).unwrap_err().to_string();
    assert!(e.contains("data/0"), "{e}");
    // The same with the storage present but too short.
    let p = zip_with(
        dir.path(),
        "short.pth",
        &[("a/data.pkl", pickle), ("a/data/0", &[0u8; 8])],
    );
    let e = import_checkpoint(&p).unwrap_err().to_string();
    assert!(e.contains("data/0") && e.contains("8 bytes"), "{e}");
    // And complete: one tensor named `w` (not a CLIPDenoising state dict).
    let p = zip_with(
        dir.path(),
        "ok.pth",
        &[("a/data.pkl", pickle), ("a/data/0", &[0u8; 16])],
    );
    let e = import_checkpoint(&p).unwrap_err().to_string();
    assert!(e.contains("no CLIPDenoising tensors"), "{e}");

    let st = std::fs::read(fixture("tiny-w8/encoder_from_archive.safetensors")).unwrap();
    let p = write_file(dir.path(), "enc.safetensors", &st[..st.len() - 100]);
    let e = read_encoder(&p).unwrap_err().to_string();
    assert!(
        e.contains("not a valid safetensors file") && e.contains("enc.safetensors"),
        "{e}"
    );
}

#[test]
fn a_torchscript_archive_is_not_a_checkpoint() {
    let e = import_checkpoint(&fixture("tiny-w8/clip_like_rn.pt"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("openai-clip"), "{e}");
}

/// A transposed view with a storage offset, little- and big-endian storages.
#[test]
fn strided_views_and_byte_order_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    // {'t': _rebuild_tensor_v2(storage(FloatStorage, '0', numel 7), offset 1, (3, 2), (1, 3), False, None)}
    let pickle = b"\x80\x02}X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x07tQK\x01K\x03K\x02\x86K\x01K\x03\x86\x89NtRs.";
    let values: Vec<f32> = (0..7).map(|i| i as f32).collect();
    let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let be: Vec<u8> = values.iter().flat_map(|v| v.to_be_bytes()).collect();
    let want = Tensor::from_slice(&[1f32, 4., 2., 5., 3., 6.]).reshape([3, 2]);
    for (name, data, order) in [
        ("le.pth", &le, &b"little"[..]),
        ("be.pth", &be, &b"big"[..]),
    ] {
        let p = zip_with(
            dir.path(),
            name,
            &[
                ("a/data.pkl", pickle),
                ("a/data/0", data),
                ("a/byteorder", order),
            ],
        );
        let f = read_torch_file(&p, &|_| true).unwrap();
        assert_eq!(f.kind, ArchiveKind::Checkpoint);
        let t = &f.tensors["t"];
        assert!(t.is_contiguous(), "{name}");
        assert!(t.equal(&want), "{name}: {t}");
    }
    // The same view one element further would leave the storage.
    let past = b"\x80\x02}X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x07tQK\x02K\x03K\x02\x86K\x01K\x03\x86\x89NtRs.";
    let p = zip_with(
        dir.path(),
        "past.pth",
        &[("a/data.pkl", past), ("a/data/0", &le)],
    );
    let e = read_torch_file(&p, &|_| true).unwrap_err().to_string();
    assert!(e.contains("out of bounds"), "{e}");
}
