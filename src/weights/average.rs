//! Weight averaging: the (weighted) mean of several weight files of one model, tensor by
//! tensor. Averaging the weights a run passes through at a constant learning rate is
//! stochastic weight averaging (Izmailov et al., UAI 2018); averaging fine-tunes of one
//! model is a "model soup" (Wortsman et al., ICML 2022). Both land in a flatter region of
//! the loss than any single snapshot and usually generalise better.
//!
//! Every input is loaded with the same strict checks as inference ([`super::load_model`]),
//! so a file that would not load as a model is refused here too, with its name.

use std::path::{Path, PathBuf};

use tch::{Device, Kind, Tensor};

use super::{load_model, save_model, Provenance, TensorMap};
use crate::error::{Error, Result};
use crate::model::Config;

/// One input of [`average`]: a weights file and its share (any positive number; the shares
/// are normalised).
#[derive(Debug, Clone, PartialEq)]
pub struct Share {
    pub path: PathBuf,
    pub weight: f64,
}

impl Share {
    pub fn new(path: impl Into<PathBuf>, weight: f64) -> Self {
        Share {
            path: path.into(),
            weight,
        }
    }
}

/// Write to `out` the mean of `inputs`' tensors, weighted by their shares. All inputs must be
/// the same model (config: width, blocks, coarse-grain); floating-point tensors are averaged
/// in f64 and stored in their own dtype, integer ones (counters) are taken from the first
/// input. Returns the model's config. The output is written atomically, after every input
/// has been read and checked, so a refused input leaves no file behind.
pub fn average(inputs: &[Share], out: &Path) -> Result<Config> {
    if inputs.len() < 2 {
        return Err(Error::Input(format!(
            "averaging needs at least two weight files, got {}",
            inputs.len()
        )));
    }
    if let Some(bad) = inputs
        .iter()
        .find(|s| !(s.weight.is_finite() && s.weight > 0.0))
    {
        return Err(Error::Input(format!(
            "the share of {} is {}: shares must be positive numbers",
            bad.path.display(),
            bad.weight
        )));
    }
    let total: f64 = inputs.iter().map(|s| s.weight).sum();
    let first = load_model(&inputs[0].path, Device::Cpu)?;
    let config = first.model.config.clone();
    let mut sums = accumulate(
        TensorMap::new(),
        &first.vs.variables(),
        inputs[0].weight / total,
    )?;
    let mut provs = vec![first.provenance.clone()];
    for share in &inputs[1..] {
        let m = load_model(&share.path, Device::Cpu)?;
        if m.model.config != config {
            return Err(Error::weights(
                &share.path,
                format!(
                    "is another model ({}) than {} ({}): only weights of one model can be averaged",
                    describe(&m.model.config),
                    inputs[0].path.display(),
                    describe(&config)
                ),
            ));
        }
        sums = accumulate(sums, &m.vs.variables(), share.weight / total)?;
        provs.push(m.provenance.clone());
    }
    // The mean goes into the first model's var store, so it is saved exactly like a model.
    store_mean(&sums, &first.vs.variables(), out)?;
    save_model(out, &first.vs, &config, &provenance(inputs, &provs))?;
    Ok(config)
}

fn describe(c: &Config) -> String {
    format!(
        "width {}, blocks {:?}{}",
        c.width,
        c.blocks,
        if c.coarse_grain { ", coarse-grain" } else { "" }
    )
}

/// Add `share` x each floating-point variable (in f64) to `sums`.
fn accumulate(
    mut sums: TensorMap,
    vars: &std::collections::HashMap<String, Tensor>,
    share: f64,
) -> Result<TensorMap> {
    for (name, v) in vars {
        if !v.is_floating_point() {
            continue;
        }
        let term = v.f_to_kind(Kind::Double)?.f_mul_scalar(share)?;
        let sum = match sums.remove(name) {
            Some(s) => s.f_add(&term)?,
            None => term,
        };
        sums.insert(name.clone(), sum);
    }
    Ok(sums)
}

/// Copy the averaged tensors into the floating-point `vars` (each in its own dtype; integer
/// variables keep the first input's values); a non-finite mean (an input holding NaN or
/// infinity) is refused.
fn store_mean(
    sums: &TensorMap,
    vars: &std::collections::HashMap<String, Tensor>,
    out: &Path,
) -> Result<()> {
    for (name, sum) in sums {
        if !bool::try_from(sum.f_isfinite()?.f_all()?)? {
            return Err(Error::weights(
                out,
                format!("the mean of tensor {name} is not finite: an input holds NaN or infinity"),
            ));
        }
        tch::no_grad(|| vars[name].shallow_clone().f_copy_(sum))?;
    }
    Ok(())
}

/// Where the mean came from: the inputs and their shares, the training data they share, and
/// the most steps any of them saw.
fn provenance(inputs: &[Share], provs: &[Provenance]) -> Provenance {
    let parts: Vec<String> = inputs
        .iter()
        .map(|s| {
            let name = s.path.file_name().map_or_else(
                || s.path.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            format!("{name} x{}", s.weight)
        })
        .collect();
    let mut data: Vec<&str> = Vec::new();
    for p in provs {
        if !data.contains(&p.training_data.as_str()) {
            data.push(&p.training_data);
        }
    }
    Provenance {
        source: format!("weight average of {}", parts.join(", ")),
        training_data: data.join("; "),
        steps: provs.iter().map(|p| p.steps).max().unwrap_or(0),
    }
}
