//! The CLIPDenoising network ("Transfer CLIP for Generalizable Image Denoising", CVPR 2024):
//! a CLIP ResNet encoder whose multi-scale features, plus the noisy image, feed a U-Net decoder.
//! See `shared/reference/MODEL.md` for the specification this follows line by line.

mod config;
pub mod conv_small_out;
mod decoder;
mod encoder;
mod fused;
mod head;
pub mod kernel_apply;
mod layers;
pub mod upsample_cat;

pub use layers::to_layout;

pub use config::{
    Config, Head, AUG_LEVEL, DEFAULT_KERNEL_DILATIONS, MAX_KERNEL_DILATION, MAX_KERNEL_PASSES,
    PRESETS,
};
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use fused::{fusion_runs, Act, InferConv};
pub use head::{apply_kernels, warm_start_tensors, KernelHead, Output, WarmStart};

use tch::{nn, Kind, Tensor};

/// The whole network. Build it on a `VarStore` root; tensor names match the authors'
/// checkpoints (`encoder.*`, `up_path.*`, `last.weight`).
#[derive(Debug)]
pub struct ClipDenoise {
    pub config: Config,
    pub encoder: Encoder,
    pub decoder: Decoder,
}

impl ClipDenoise {
    pub fn new(root: &nn::Path, config: &Config) -> Self {
        ClipDenoise {
            config: config.clone(),
            encoder: Encoder::new(&(root / "encoder"), config),
            decoder: Decoder::new(root, config),
        }
    }

    /// The dense features the decoder consumes: [image, F1, F2, F3, F4] (`train`: BatchNorm in
    /// training mode; no feature augmentation, see [`ClipDenoise::forward_train`]).
    pub fn features(&self, x: &Tensor, train: bool) -> Vec<Tensor> {
        let mut feats = vec![x.shallow_clone()];
        feats.extend(self.encoder.forward_t(x, train));
        feats
    }

    /// Noisy RGB in [0, 1] (N, 3, H, W), H and W multiples of 32 -> clean RGB (not clamped).
    /// `train` puts BatchNorm in training mode; training itself uses
    /// [`ClipDenoise::forward_train`], which also augments the features.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.decoder.forward(&self.features(x, train))
    }

    /// The training forward pass: BatchNorm in training mode and progressive feature
    /// augmentation, F_k *= 1 + N(0,1) * k * aug_level, where `normal(f)` gives the standard
    /// normal samples shaped like F_k (on its device) from the caller's generator.
    pub fn forward_train<E>(
        &self,
        x: &Tensor,
        normal: &mut dyn FnMut(&Tensor) -> Result<Tensor, E>,
    ) -> Result<Tensor, E> {
        let mut feats = vec![x.shallow_clone()];
        for (k, f) in self.encoder.forward_t(x, true).into_iter().enumerate() {
            let a = (k + 1) as f64 * self.config.aug_level;
            feats.push(if a > 0.0 {
                &f * (normal(&f)? * a + 1.0)
            } else {
                f
            });
        }
        Ok(self.decoder.forward(&feats))
    }

    /// Turn this instance into an inference engine: BatchNorm folded into the encoder convs,
    /// weights copied to `kind` and, if asked, channels_last layout, and on the CPU every conv
    /// fused with its bias, activation and residual add into one oneDNN primitive with
    /// prepacked weights ([`InferConv`]), unless the environment sets `CLIPDENOISE_FUSED=0`
    /// (the unfused ops, for comparisons). Training must not use it.
    pub fn prepare_inference(&mut self, kind: Kind, channels_last: bool) {
        let fuse = std::env::var("CLIPDENOISE_FUSED").map_or(true, |v| v.trim() != "0");
        self.prepare_inference_with(kind, channels_last, fuse);
    }

    /// [`ClipDenoise::prepare_inference`] with fusion chosen by the caller (`fuse` false: the
    /// separate conv, activation and add passes). Can be called again to switch.
    pub fn prepare_inference_with(&mut self, kind: Kind, channels_last: bool, fuse: bool) {
        for cb in self.encoder.conv_bns_mut() {
            cb.fuse(kind, channels_last, fuse);
        }
        self.decoder.prepare(kind, channels_last, fuse);
    }

    /// Whether the prepared network runs fused convolutions (all of them or none).
    pub fn is_fused(&self) -> bool {
        self.decoder.is_fused()
    }
}

impl nn::ModuleT for ClipDenoise {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        ClipDenoise::forward_t(self, xs, train)
    }
}
