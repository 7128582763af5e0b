//! `weights::average`: the weighted mean of weight files of one model, written as a model
//! file; files of another model, with NaN, or too few are refused and nothing is written.

use std::path::{Path, PathBuf};

use clipdenoise::model::{ClipDenoise, Config};
use clipdenoise::weights::average::{average, Share};
use clipdenoise::weights::{self, Provenance, TensorMap};
use tch::{nn, Device, Kind};

/// A freshly initialised model of `config` saved to `dir/name`, its tensors perturbed by
/// `offset` so no two files are alike.
fn model_file(dir: &Path, name: &str, config: &Config, offset: f64) -> (PathBuf, TensorMap) {
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = ClipDenoise::new(&vs.root(), config);
    tch::no_grad(|| {
        for (_, v) in vs.variables() {
            if v.is_floating_point() {
                let _ = v.shallow_clone().g_add_scalar_(offset);
            }
        }
    });
    let path = dir.join(name);
    let prov = Provenance {
        source: format!("test {name}"),
        training_data: "synthetic".into(),
        steps: (offset * 100.0) as u64,
    };
    weights::save_model(&path, &vs, config, &prov).unwrap();
    (path, vs.variables().into_iter().collect())
}

fn only_file_is(dir: &Path, names: &[&str]) {
    let mut have: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    have.sort();
    let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(have, want, "files in the folder");
}

#[test]
fn the_mean_is_weighted_by_the_shares_and_loads_as_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::new(8, [1, 1, 1]);
    let (a, ta) = model_file(dir.path(), "a.safetensors", &cfg, 0.5);
    let (b, tb) = model_file(dir.path(), "b.safetensors", &cfg, 2.0);
    let out = dir.path().join("mean.safetensors");
    let got = average(&[Share::new(&a, 1.0), Share::new(&b, 3.0)], &out).unwrap();
    assert_eq!(got, cfg);

    let (mean, meta) = weights::read_safetensors(&out).unwrap();
    assert_eq!(mean.len(), ta.len());
    for (name, t) in &mean {
        assert_eq!(t.kind(), ta[name].kind(), "{name}: dtype kept");
        if !t.is_floating_point() {
            continue;
        }
        let want = ta[name].to_kind(Kind::Double) * 0.25 + tb[name].to_kind(Kind::Double) * 0.75;
        let err = (t.to_kind(Kind::Double) - want)
            .abs()
            .max()
            .double_value(&[]);
        assert!(err < 1e-6, "{name}: off by {err}");
    }
    let prov = weights::provenance_from_metadata(&meta);
    assert!(
        prov.source.contains("a.safetensors x1") && prov.source.contains("b.safetensors x3"),
        "{}",
        prov.source
    );
    assert_eq!(prov.steps, 200, "the most steps of the inputs");
    assert_eq!(prov.training_data, "synthetic");
    let loaded = weights::load_model(&out, Device::Cpu).unwrap();
    assert_eq!(loaded.model.config, cfg);
}

#[test]
fn another_model_nan_a_bad_share_or_a_single_file_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config::new(8, [1, 1, 1]);
    let (a, _) = model_file(dir.path(), "a.safetensors", &cfg, 0.0);
    let (wide, _) = model_file(
        dir.path(),
        "wide.safetensors",
        &Config::new(16, [1, 1, 1]),
        0.0,
    );
    let (deep, _) = model_file(
        dir.path(),
        "deep.safetensors",
        &Config::new(8, [1, 2, 1]),
        0.0,
    );
    let out = dir.path().join("mean.safetensors");

    for other in [&wide, &deep] {
        let e = average(&[Share::new(&a, 1.0), Share::new(other, 1.0)], &out)
            .unwrap_err()
            .to_string();
        let name = other.file_name().unwrap().to_str().unwrap();
        assert!(e.contains(name) && e.contains("another model"), "{e}");
    }

    // A NaN in one tensor of an otherwise valid file.
    let (mut t, meta) = weights::read_safetensors(&a).unwrap();
    let name = t
        .keys()
        .find(|k| k.ends_with("conv1.weight"))
        .unwrap()
        .clone();
    let _ = t.get_mut(&name).unwrap().get(0).fill_(f64::NAN);
    let nan = dir.path().join("nan.safetensors");
    weights::write_safetensors(&nan, &t, meta).unwrap();
    let e = average(&[Share::new(&a, 1.0), Share::new(&nan, 1.0)], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&name) && e.contains("not finite"), "{e}");

    for w in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = average(&[Share::new(&a, 1.0), Share::new(&a, w)], &out)
            .unwrap_err()
            .to_string();
        assert!(e.contains("positive"), "share {w}: {e}");
    }
    let e = average(&[Share::new(&a, 1.0)], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least two"), "{e}");

    let garbage = dir.path().join("garbage.safetensors");
    std::fs::write(&garbage, b"not weights").unwrap();
    let e = average(&[Share::new(&a, 1.0), Share::new(&garbage, 1.0)], &out)
        .unwrap_err()
        .to_string();
    assert!(e.contains("garbage.safetensors"), "{e}");

    only_file_is(
        dir.path(),
        &[
            "a.safetensors",
            "wide.safetensors",
            "deep.safetensors",
            "nan.safetensors",
            "garbage.safetensors",
        ],
    );
}
