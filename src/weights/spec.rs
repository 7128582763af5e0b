//! The variables of a model (name, shape, dtype) computed from its config alone, so that a
//! weights file can be checked against the model before the model is allocated. It mirrors
//! `ClipDenoise::new` (src/model); a test builds models and compares.

use tch::Kind;

use crate::model::{Config, Head, KernelHead};

/// One variable of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<i64>,
    pub kind: Kind,
}

/// Every variable `ClipDenoise::new` creates for `config`, in no particular order.
pub fn model_tensor_specs(config: &Config) -> Vec<TensorSpec> {
    let mut out = Vec::new();
    let w = config.width;
    let mut conv_bn = |p: &str, conv: &str, bn: &str, cin: i64, cout: i64, k: i64| {
        out.push(spec(format!("{p}.{conv}.weight"), vec![cout, cin, k, k]));
        for b in ["weight", "bias", "running_mean", "running_var"] {
            out.push(spec(format!("{p}.{bn}.{b}"), vec![cout]));
        }
        out.push(TensorSpec {
            name: format!("{p}.{bn}.num_batches_tracked"),
            shape: vec![],
            kind: Kind::Int64,
        });
    };
    // Encoder: the stem, then layer1..layer3 of CLIP bottlenecks (expansion 4).
    conv_bn("encoder", "conv1", "bn1", 3, w / 2, 3);
    conv_bn("encoder", "conv2", "bn2", w / 2, w / 2, 3);
    conv_bn("encoder", "conv3", "bn3", w / 2, w, 3);
    let mut inplanes = w;
    for (i, &n) in config.blocks.iter().enumerate() {
        let planes = w << i;
        for j in 0..n {
            let p = format!("encoder.layer{}.{j}", i + 1);
            conv_bn(&p, "conv1", "bn1", inplanes, planes, 1);
            conv_bn(&p, "conv2", "bn2", planes, planes, 3);
            conv_bn(&p, "conv3", "bn3", planes, planes * 4, 1);
            if j == 0 && (i > 0 || inplanes != planes * 4) {
                conv_bn(
                    &format!("{p}.downsample"),
                    "0",
                    "1",
                    inplanes,
                    planes * 4,
                    1,
                );
            }
            inplanes = planes * 4;
        }
    }
    // Decoder: five blocks of two 3x3 convs, then the output head (src/model/head.rs).
    let blocks = [
        (16 * w, 8 * w),
        (16 * w, 4 * w),
        (8 * w, 2 * w),
        (3 * w, w),
        (w + 3, w),
    ];
    for (i, (cin, cout)) in blocks.into_iter().enumerate() {
        let p = format!("up_path.{i}.conv_block.block");
        out.push(spec(format!("{p}.0.weight"), vec![cout, cin, 3, 3]));
        out.push(spec(format!("{p}.2.weight"), vec![cout, cout, 3, 3]));
    }
    match config.head {
        Head::Pixels => out.push(spec("last.weight".into(), vec![3, w, 3, 3])),
        Head::Kernel => {
            let n = KernelHead::logits(config.kernel_dilations().len());
            out.push(spec("head.logits.weight".into(), vec![n, w, 1, 1]));
            out.push(spec("head.logits.bias".into(), vec![n]));
        }
    }
    out
}

fn spec(name: String, shape: Vec<i64>) -> TensorSpec {
    TensorSpec {
        name,
        shape,
        kind: Kind::Float,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ClipDenoise;
    use tch::{nn, Device};

    /// The specs are exactly the variables of a built model (names, shapes, dtypes).
    #[test]
    fn specs_match_the_built_model() {
        for (i, (width, blocks, head)) in [
            (8, [1, 1, 1], Head::Pixels),
            (16, [2, 2, 2], Head::Pixels),
            (6, [3, 1, 2], Head::Pixels),
            (2, [1, 2, 1], Head::Pixels),
            (8, [1, 1, 1], Head::Kernel),
            (16, [1, 2, 1], Head::Kernel),
            (8, [1, 1, 1], Head::Kernel),
        ]
        .into_iter()
        .enumerate()
        {
            // The last: a kernel head with other passes than the default.
            let kernel_dilations = (i == 6).then(|| vec![1, 2, 4, 8, 1]);
            let config = Config {
                aug_level: 0.0,
                head,
                kernel_dilations,
                ..Config::new(width, blocks)
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let _model = ClipDenoise::new(&vs.root(), &config);
            let mut built: Vec<TensorSpec> = vs
                .variables()
                .into_iter()
                .map(|(name, t)| TensorSpec {
                    name,
                    shape: t.size(),
                    kind: t.kind(),
                })
                .collect();
            built.sort_by(|a, b| a.name.cmp(&b.name));
            let mut specs = model_tensor_specs(&config);
            specs.sort_by(|a, b| a.name.cmp(&b.name));
            assert_eq!(specs, built, "width {width}, blocks {blocks:?}, {head:?}");
        }
    }
}
