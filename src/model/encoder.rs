//! CLIP's ModifiedResNet image tower without attention pool and without layer4.
//! Path segments mirror the authors' state-dict keys (`encoder.layer1.0.conv1.weight`, ...).

use tch::{nn, Tensor};

use super::config::Config;
use super::fused::Act;
use super::layers::ConvBn;

/// CLIP Bottleneck (expansion 4) with anti-aliased striding: the 3x3 conv has stride 1 and an
/// avgpool(stride) follows it; the downsample branch is avgpool(stride), conv1x1, BN.
#[derive(Debug)]
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    stride: i64,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(p: &nn::Path, inplanes: i64, planes: i64, stride: i64) -> Self {
        let downsample = (stride > 1 || inplanes != planes * 4)
            .then(|| ConvBn::new(&(p / "downsample"), "0", "1", inplanes, planes * 4, 1, 1));
        Bottleneck {
            c1: ConvBn::new(p, "conv1", "bn1", inplanes, planes, 1, 1),
            c2: ConvBn::new(p, "conv2", "bn2", planes, planes, 3, 1),
            c3: ConvBn::new(p, "conv3", "bn3", planes, planes * 4, 1, 1),
            stride,
            downsample,
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = self.c1.forward_act(x, train, Act::Relu);
        out = self.c2.forward_act(&out, train, Act::Relu);
        if self.stride > 1 {
            out = avg_pool(&out, self.stride);
        }
        let identity = match &self.downsample {
            Some(ds) if self.stride > 1 => ds.forward_t(&avg_pool(x, self.stride), train),
            Some(ds) => ds.forward_t(x, train),
            None => x.shallow_clone(),
        };
        // relu(c3(out) + identity): the add and the ReLU fused into c3 once folded.
        self.c3.forward_add_act(&out, &identity, train, Act::Relu)
    }

    fn conv_bns_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        [&mut self.c1, &mut self.c2, &mut self.c3]
            .into_iter()
            .chain(self.downsample.as_mut())
    }
}

fn avg_pool(x: &Tensor, k: i64) -> Tensor {
    x.avg_pool2d([k, k], [k, k], [0, 0], false, true, None::<i64>)
}

/// Stem (three 3x3 conv+BN+ReLU, the first with stride 2) and layer1..layer3.
#[derive(Debug)]
pub struct Encoder {
    stem: [ConvBn; 3],
    layers: Vec<Vec<Bottleneck>>,
}

impl Encoder {
    /// `p` is the `encoder` path.
    pub fn new(p: &nn::Path, cfg: &Config) -> Self {
        let w = cfg.width;
        let stem = [
            ConvBn::new(p, "conv1", "bn1", 3, w / 2, 3, 2),
            ConvBn::new(p, "conv2", "bn2", w / 2, w / 2, 3, 1),
            ConvBn::new(p, "conv3", "bn3", w / 2, w, 3, 1),
        ];
        let mut inplanes = w;
        let mut layers = Vec::new();
        for (i, &n) in cfg.blocks.iter().enumerate() {
            let planes = w << i;
            let stride = if i == 0 { 1 } else { 2 };
            let lp = p / format!("layer{}", i + 1);
            let mut blocks = vec![Bottleneck::new(&(&lp / "0"), inplanes, planes, stride)];
            inplanes = planes * 4;
            for j in 1..n {
                blocks.push(Bottleneck::new(&(&lp / j.to_string()), inplanes, planes, 1));
            }
            layers.push(blocks);
        }
        Encoder { stem, layers }
    }

    /// Returns [F1 (w, H/2), F2 (4w, H/4), F3 (8w, H/8), F4 (16w, H/16)].
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        let mut h = x.shallow_clone();
        for cb in &self.stem {
            h = cb.forward_act(&h, train, Act::Relu);
        }
        let mut feats = vec![h.shallow_clone()];
        h = avg_pool(&h, 2);
        for layer in &self.layers {
            for block in layer {
                h = block.forward_t(&h, train);
            }
            feats.push(h.shallow_clone());
        }
        feats
    }

    pub(crate) fn conv_bns_mut(&mut self) -> impl Iterator<Item = &mut ConvBn> {
        self.stem.iter_mut().chain(
            self.layers
                .iter_mut()
                .flatten()
                .flat_map(|b| b.conv_bns_mut()),
        )
    }
}
