//! Importers: OpenAI's CLIP `RN50.pt` (TorchScript, float16) and the authors' checkpoints
//! (`torch.save({'params': state_dict})`), both read with the restricted unpickler of
//! [`super::pickle`] (nothing in the files is executed).
//!
//! - [`import_openai_clip`]: the encoder only (stem + layer1..layer3, as float32).
//! - [`import_checkpoint`]: a complete model (encoder + decoder).
//! - [`compose`]: checkpoint and/or encoder into the tensors of one model.
//! - [`save_imported`]: check the tensors against the model and write a weights file.

use std::path::Path;

use tch::{Device, Kind, Tensor};

use super::pickle::{read_torch_file, ArchiveKind};
use super::{
    build_checked, infer_config, model_metadata, with_inferred_config, write_safetensors, Missing,
    Provenance, TensorMap,
};
use crate::error::{Error, Result};
use crate::model::Config;

/// Prefix of the image tower in OpenAI's CLIP files.
const CLIP_VISUAL: &str = "visual.";
/// Prefix of the encoder in this project's (and the authors') state dicts.
const ENCODER: &str = "encoder.";
/// Top-level keys of the authors' (BasicSR) checkpoints, in order of preference.
const CHECKPOINT_KEYS: &[&str] = &["params", "params_ema", "state_dict"];

/// Whether an encoder tensor name (without `encoder.`) belongs to the parts the model uses:
/// the stem (conv1..3, bn1..3) and layer1..layer3. layer4 and attnpool are dropped.
pub fn is_used_encoder_tensor(name: &str) -> bool {
    const STEM: &[&str] = &["conv1.", "conv2.", "conv3.", "bn1.", "bn2.", "bn3."];
    const LAYERS: &[&str] = &["layer1.", "layer2.", "layer3."];
    STEM.iter().chain(LAYERS).any(|p| name.starts_with(p))
}

/// BatchNorm running statistics: taken from the checkpoint when both files have them
/// (the authors' "frozen" encoder kept its BN layers in training mode).
pub fn is_batchnorm_buffer(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

/// float16 / bfloat16 / float64 -> float32; integer tensors (num_batches_tracked) unchanged.
fn to_f32(t: Tensor) -> Result<Tensor> {
    Ok(match t.kind() {
        Kind::Half | Kind::BFloat16 | Kind::Double => t.f_to_kind(Kind::Float)?,
        _ => t,
    })
}

/// OpenAI's CLIP ResNet (`RN50.pt`, TorchScript, float16): the `visual.*` stem and
/// layer1..layer3 renamed to `encoder.*`, as float32. layer4, attnpool and the text tower are
/// dropped.
pub fn import_openai_clip(path: &Path) -> Result<TensorMap> {
    let keep = |n: &str| {
        n.strip_prefix(CLIP_VISUAL)
            .is_some_and(is_used_encoder_tensor)
    };
    let file = read_torch_file(path, &keep)?;
    let mut out = TensorMap::new();
    for (name, t) in file.tensors {
        let Some(rest) = name.strip_prefix(CLIP_VISUAL) else {
            continue;
        };
        out.insert(format!("{ENCODER}{rest}"), to_f32(t)?);
    }
    if !out.contains_key("encoder.layer1.0.conv1.weight") || !out.contains_key("encoder.bn1.weight")
    {
        return Err(Error::format(
            path,
            "no CLIP ResNet image encoder (visual.bn1, visual.layer1...) in this file; only the \
             ResNet CLIP models such as RN50 are supported",
        ));
    }
    Ok(out)
}

/// The authors' checkpoint (`torch.save({'params': state_dict})`, zip format); also
/// `params_ema`, `state_dict` or a bare state dict. Floating tensors become float32,
/// a DataParallel `module.` prefix and the unused `encoder.layer4.*` are dropped.
pub fn import_checkpoint(path: &Path) -> Result<TensorMap> {
    let file = read_torch_file(path, &|_| true)?;
    if file.kind == ArchiveKind::TorchScript {
        return Err(Error::format(
            path,
            "this is a TorchScript archive (an OpenAI CLIP model?), not a checkpoint; use `import openai-clip`",
        ));
    }
    let state = select_state_dict(file.tensors);
    let module_prefixed = !state.is_empty() && state.keys().all(|k| k.starts_with("module."));
    let mut out = TensorMap::new();
    for (name, t) in state {
        let name = if module_prefixed {
            name["module.".len()..].to_string()
        } else {
            name
        };
        if !name.starts_with("encoder.layer4.") {
            out.insert(name, to_f32(t)?);
        }
    }
    if !out
        .keys()
        .any(|k| k.starts_with(ENCODER) || k.starts_with("up_path."))
    {
        return Err(Error::weights(
            path,
            "no CLIPDenoising tensors (encoder.*, up_path.*, last.weight) in this checkpoint",
        ));
    }
    Ok(out)
}

/// The state dict under `params` (else `params_ema`, `state_dict`), or the whole file.
fn select_state_dict(tensors: TensorMap) -> TensorMap {
    for key in CHECKPOINT_KEYS {
        let prefix = format!("{key}.");
        if tensors.keys().any(|k| k.starts_with(&prefix)) {
            return tensors
                .into_iter()
                .filter_map(|(k, t)| k.strip_prefix(&prefix).map(|s| (s.to_string(), t)))
                .collect();
        }
    }
    tensors
}

/// An encoder for [`compose`]: a safetensors file of ours (`import openai-clip` output) or an
/// OpenAI CLIP `.pt` archive, told apart by their first bytes. Only `encoder.*` tensors are kept.
pub fn read_encoder(path: &Path) -> Result<TensorMap> {
    let mut head = [0u8; 2];
    {
        use std::io::Read;
        let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let _ = f.read(&mut head).map_err(|e| Error::io(path, e))?;
    }
    let tensors = if &head == b"PK" {
        import_openai_clip(path)?
    } else {
        super::read_safetensors(path)?.0
    };
    let enc: TensorMap = tensors
        .into_iter()
        .filter(|(k, _)| k.strip_prefix(ENCODER).is_some_and(is_used_encoder_tensor))
        .collect();
    if enc.is_empty() {
        return Err(Error::weights(path, "no encoder.* tensors in this file"));
    }
    Ok(enc)
}

/// The tensors of one model from a checkpoint and/or an encoder:
/// - checkpoint only: the checkpoint;
/// - both: encoder conv weights and BN affine parameters from the encoder, BN running
///   statistics from the checkpoint (where it has them), the decoder from the checkpoint;
/// - encoder only: only when `training`, with a freshly initialised decoder; for inference
///   it is an error (a decoder checkpoint is needed).
pub fn compose(
    checkpoint: Option<TensorMap>,
    encoder: Option<TensorMap>,
    training: bool,
) -> Result<TensorMap> {
    match (checkpoint, encoder) {
        (Some(ckpt), None) => Ok(ckpt),
        (Some(ckpt), Some(enc)) => overlay_encoder(ckpt, enc),
        (None, Some(enc)) if training => with_fresh_decoder(&enc),
        (None, Some(_)) => Err(Error::Input(
            "an encoder file alone has no decoder: inference needs a trained decoder checkpoint \
             (clipdenoise import checkpoint net_g_latest.pth --encoder ENCODER.safetensors), or train one"
                .into(),
        )),
        (None, None) => Err(Error::Input("nothing to import: give a checkpoint, an encoder or both".into())),
    }
}

fn overlay_encoder(mut ckpt: TensorMap, enc: TensorMap) -> Result<TensorMap> {
    for (name, t) in enc {
        if !name.starts_with(ENCODER) || name.starts_with("encoder.layer4.") {
            continue;
        }
        match ckpt.get(&name) {
            Some(_) if is_batchnorm_buffer(&name) => {}
            Some(old) if old.size() != t.size() => {
                return Err(Error::Input(format!(
                    "encoder tensor {name} has shape {:?}, the checkpoint's has {:?} (different model sizes?)",
                    t.size(),
                    old.size()
                )))
            }
            _ => {
                ckpt.insert(name, t);
            }
        }
    }
    Ok(ckpt)
}

fn with_fresh_decoder(enc: &TensorMap) -> Result<TensorMap> {
    let origin = Path::new("encoder");
    let config = infer_config(enc, origin)?;
    let (vs, _model) = build_checked(
        enc,
        &config,
        origin,
        Device::Cpu,
        Missing::DecoderMayBeMissing,
    )
    .map_err(|e| with_inferred_config(e, &config))?;
    vs.variables()
        .into_iter()
        .map(|(k, v)| Ok((k, v.f_detach()?)))
        .collect()
}

/// Check `tensors` against the model they describe (config inferred from their shapes;
/// a missing decoder allowed only with [`Missing::DecoderMayBeMissing`]) and write them with
/// config and provenance to `out` (atomically: no file is left behind on error).
/// `origin` names the input file in errors. Returns the config.
pub fn save_imported(
    out: &Path,
    tensors: &TensorMap,
    origin: &Path,
    provenance: &Provenance,
    missing: Missing,
) -> Result<Config> {
    let config = infer_config(tensors, origin)?;
    let _checked = build_checked(tensors, &config, origin, Device::Cpu, missing)
        .map_err(|e| with_inferred_config(e, &config))?;
    write_safetensors(out, tensors, model_metadata(&config, provenance))?;
    Ok(config)
}

/// Provenance of an `import openai-clip` output.
pub fn openai_clip_provenance(input: &Path) -> Provenance {
    Provenance {
        source: format!(
            "imported from {} (OpenAI CLIP RN50 image encoder; no decoder)",
            file_name(input)
        ),
        training_data: "OpenAI CLIP pretraining (encoder only)".into(),
        steps: 0,
    }
}

/// Provenance of an `import checkpoint` output.
pub fn checkpoint_provenance(input: &Path, encoder: Option<&Path>) -> Provenance {
    let mut source = format!(
        "imported from {} (CLIPDenoising authors' checkpoint)",
        file_name(input)
    );
    if let Some(e) = encoder {
        source.push_str(&format!(", encoder weights from {}", file_name(e)));
    }
    Provenance {
        source,
        training_data: "unknown (imported checkpoint)".into(),
        steps: 0,
    }
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_encoder_tensors() {
        assert!(is_used_encoder_tensor("conv1.weight"));
        assert!(is_used_encoder_tensor("layer3.5.downsample.1.running_var"));
        assert!(!is_used_encoder_tensor("layer4.0.conv1.weight"));
        assert!(!is_used_encoder_tensor("attnpool.c_proj.weight"));
        assert!(is_batchnorm_buffer("encoder.bn1.num_batches_tracked"));
        assert!(!is_batchnorm_buffer("encoder.bn1.weight"));
    }

    #[test]
    fn encoder_alone_is_refused_for_inference() {
        let enc = TensorMap::from([(
            "encoder.conv1.weight".to_string(),
            Tensor::zeros([1], (Kind::Float, Device::Cpu)),
        )]);
        let e = compose(None, Some(enc), false).unwrap_err().to_string();
        assert!(e.contains("decoder checkpoint"), "{e}");
        assert!(compose(None, None, true).is_err());
    }
}
