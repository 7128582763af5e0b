//! The learned U-Net decoder: depth 5, 3x3 convs without bias, LeakyReLU(0.2), bilinear x2
//! upsampling (align_corners), concatenation [upsampled, skip] (one pass in fused inference:
//! [`super::upsample_cat`]). Keys: `up_path.{i}.conv_block.block.{0,2}.weight`, `last.weight` (or the kernel head's
//! `head.logits.*`).

use tch::{nn, Kind, Tensor};

use super::config::Config;
use super::fused::{Act, InferConv};
use super::head::Output;
use super::layers::{conv3x3, infer_conv};
use super::upsample_cat;

pub const LEAKY_SLOPE: f64 = 0.2;

#[derive(Debug)]
struct ConvBlock {
    conv0: nn::Conv2D,
    conv2: nn::Conv2D,
    /// The inference copies of conv0 and conv2, each fused with its LeakyReLU ([`Decoder::prepare`]).
    infer: Option<[InferConv; 2]>,
}

impl ConvBlock {
    fn new(p: &nn::Path, cin: i64, cout: i64) -> Self {
        let b = p / "conv_block" / "block";
        ConvBlock {
            conv0: conv3x3(&b / "0", cin, cout),
            conv2: conv3x3(&b / "2", cout, cout),
            infer: None,
        }
    }

    fn forward(&self, x: &Tensor, slope: &Tensor) -> Tensor {
        if let Some([c0, c2]) = &self.infer {
            let act = Act::Leaky(LEAKY_SLOPE);
            return c2.forward(&c0.forward(x, act), act);
        }
        let h = x.apply(&self.conv0).prelu(slope);
        h.apply(&self.conv2).prelu(slope)
    }
}

#[derive(Debug)]
pub struct Decoder {
    up_path: Vec<ConvBlock>,
    /// The output head (`last`, or the kernel head: [`super::head`]).
    last: Output,
}

impl Decoder {
    /// `p` is the root path (keys `up_path.*` and `last.*` sit at the top level).
    pub fn new(p: &nn::Path, cfg: &Config) -> Self {
        let w = cfg.width;
        let up = p / "up_path";
        // (in, out) of each block: F4 block, then [x, F3], [x, F2], [x, F1], [x, image].
        let shapes = [
            (16 * w, 8 * w),
            (16 * w, 4 * w),
            (8 * w, 2 * w),
            (3 * w, w),
            (w + 3, w),
        ];
        let up_path = shapes
            .iter()
            .enumerate()
            .map(|(i, &(cin, cout))| ConvBlock::new(&(&up / i.to_string()), cin, cout))
            .collect();
        Decoder {
            up_path,
            last: Output::new(p, cfg),
        }
    }

    /// `feats` = [image, F1, F2, F3, F4].
    pub fn forward(&self, feats: &[Tensor]) -> Tensor {
        let slope = Tensor::from_slice(&[LEAKY_SLOPE])
            .to_kind(feats[4].kind())
            .to_device(feats[4].device());
        // Fused inference also upsamples and concatenates in one pass.
        let fuse = self.is_fused();
        let mut x = self.up_path[0].forward(&feats[4], &slope);
        for (block, skip) in self.up_path[1..].iter().zip(feats[..4].iter().rev()) {
            x = block.forward(&upsample_cat::upsample2x_cat(&x, skip, fuse), &slope);
        }
        self.last.forward(&x, &feats[0])
    }

    /// Inference copies of the weights in `kind` and layout (the var store keeps f32 masters),
    /// each conv fused with its activation where that runs (`fuse`).
    pub fn prepare(&mut self, kind: Kind, channels_last: bool, fuse: bool) {
        for b in &mut self.up_path {
            b.infer = Some([
                infer_conv(&b.conv0, kind, channels_last, fuse),
                infer_conv(&b.conv2, kind, channels_last, fuse),
            ]);
        }
        self.last.prepare(kind, channels_last, fuse);
    }

    /// Whether [`Decoder::prepare`] made fused convs.
    pub fn is_fused(&self) -> bool {
        self.up_path[0]
            .infer
            .as_ref()
            .is_some_and(|[c0, _]| c0.is_fused())
    }
}
