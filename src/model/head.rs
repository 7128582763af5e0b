//! The decoder's output head: the paper's 3x3 conv to RGB (`last.weight`), or a
//! kernel-predicting head (`head.logits.*`, issue 23) whose output is, per pixel and channel,
//! a convex combination of the noisy input's pixels: softmax weights over a 3x3 neighbourhood
//! at dilation 1, applied to the input, then a second set over 3x3 at dilation 2 applied to
//! that (support 7x7). Weights are non-negative and sum to 1, so a flat area keeps its level
//! and colour, and the head cannot invent intensities (KPN, Mildenhall et al. 2018; IDF, Kim
//! et al. 2025). Kept apart from the decoder's blocks so that their inference fusion and this
//! head change independently.

use tch::{nn, Kind, Tensor};

use super::config::Head;
use super::fused::{Act, InferConv};
use super::layers::{conv3x3, infer_conv};

/// The dilations of the kernel head's passes, in order.
pub const KERNEL_DILATIONS: [i64; 2] = [1, 2];
/// Taps of one pass (3x3).
pub const KERNEL_TAPS: i64 = 9;
/// The centre tap's initial logit: with the other logits near 0 the first steps average
/// about half the centre pixel with half its neighbours (between identity and a box filter).
const CENTRE_LOGIT: f64 = 2.0;
/// The initial logit weights are the default init scaled by this (logits start near the bias).
const INIT_WEIGHT_SCALE: f64 = 0.1;

/// What the decoder's last features become: the head and, once prepared for inference, its
/// conv's inference copy.
#[derive(Debug)]
pub struct Output {
    head: HeadKind,
    infer: Option<InferConv>,
}

#[derive(Debug)]
enum HeadKind {
    /// `last`: 3x3 conv, no bias, to RGB.
    Pixels(nn::Conv2D),
    Kernel(KernelHead),
}

impl Output {
    /// `p` is the model's root path (`last.*` or `head.*` at the top level).
    pub fn new(p: &nn::Path, head: Head, width: i64) -> Output {
        let head = match head {
            Head::Pixels => HeadKind::Pixels(conv3x3(p / "last", width, 3)),
            Head::Kernel => HeadKind::Kernel(KernelHead::new(&(p / "head"), width)),
        };
        Output { head, infer: None }
    }

    /// `feat`: the decoder's last features (N, width, H, W); `image`: the noisy input.
    pub fn forward(&self, feat: &Tensor, image: &Tensor) -> Tensor {
        let conv_out = |conv: &nn::Conv2D| match &self.infer {
            Some(c) => c.forward(feat, Act::None),
            None => feat.apply(conv),
        };
        match &self.head {
            HeadKind::Pixels(conv) => conv_out(conv),
            HeadKind::Kernel(k) => apply_kernels(&conv_out(&k.logits), image),
        }
    }

    /// The inference copy of the head's conv in `kind` and layout (`fuse`: as the decoder's).
    pub fn prepare(&mut self, kind: Kind, channels_last: bool, fuse: bool) {
        let conv = match &self.head {
            HeadKind::Pixels(conv) => conv,
            HeadKind::Kernel(k) => &k.logits,
        };
        self.infer = Some(infer_conv(conv, kind, channels_last, fuse));
    }
}

/// Per-pixel kernel logits from the decoder's features (a 1x1 conv with bias), softmax-normed
/// and applied to the noisy input.
#[derive(Debug)]
pub struct KernelHead {
    logits: nn::Conv2D,
}

impl KernelHead {
    /// Logits per pixel: (pass, RGB channel, tap), `KERNEL_DILATIONS.len() * 3 * 9` in all.
    pub const LOGITS: i64 = KERNEL_DILATIONS.len() as i64 * 3 * KERNEL_TAPS;

    pub fn new(p: &nn::Path, width: i64) -> KernelHead {
        let logits = nn::conv2d(p / "logits", width, Self::LOGITS, 1, Default::default());
        tch::no_grad(|| {
            let _ = logits.ws.shallow_clone().f_mul_scalar_(INIT_WEIGHT_SCALE);
            if let Some(b) = &logits.bs {
                let centre = (0..Self::LOGITS)
                    .map(|i| {
                        if i % KERNEL_TAPS == KERNEL_TAPS / 2 {
                            CENTRE_LOGIT as f32
                        } else {
                            0.0
                        }
                    })
                    .collect::<Vec<f32>>();
                b.shallow_clone()
                    .copy_(&Tensor::from_slice(&centre).to_device(b.device()));
            }
        });
        KernelHead { logits }
    }

    pub fn forward(&self, feat: &Tensor, image: &Tensor) -> Tensor {
        apply_kernels(&feat.apply(&self.logits), image)
    }
}

/// Apply per-pixel kernels: `logits` (N, LOGITS, H, W) softmax-normed per (pass, channel) over
/// the 9 taps, each pass on the previous pass's result, the first on `image` (N, 3, H, W).
/// Computed in f32 (returns f32); borders reflect.
pub fn apply_kernels(logits: &Tensor, image: &Tensor) -> Tensor {
    let (n, h, w) = (image.size()[0], image.size()[2], image.size()[3]);
    let passes = KERNEL_DILATIONS.len() as i64;
    let weights = logits
        .to_kind(Kind::Float)
        .view([n, passes, 3, KERNEL_TAPS, h, w])
        .softmax(3, Kind::Float);
    let mut y = image.to_kind(Kind::Float);
    for (s, &d) in KERNEL_DILATIONS.iter().enumerate() {
        let mode = if h.min(w) > d { "reflect" } else { "replicate" };
        let padded = y.pad([d, d, d, d], mode, None);
        let ws = weights.select(1, s as i64);
        let mut acc = Tensor::zeros([n, 3, h, w], (Kind::Float, image.device()));
        for k in 0..KERNEL_TAPS {
            let (dy, dx) = (k / 3, k % 3);
            let shifted = padded.narrow(2, dy * d, h).narrow(3, dx * d, w);
            acc += shifted * ws.select(2, k);
        }
        y = acc;
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn kernels_are_convex_combinations_of_the_input() {
        tch::manual_seed(5);
        let (n, h, w) = (2, 11, 14);
        let logits = Tensor::randn([n, KernelHead::LOGITS, h, w], (Kind::Float, Device::Cpu)) * 3.0;
        // A constant colour comes out exactly, whatever the logits.
        let flat = Tensor::ones([n, 3, h, w], (Kind::Float, Device::Cpu))
            * Tensor::from_slice(&[0.2f32, 0.5, 0.9]).view([1, 3, 1, 1]);
        let out = apply_kernels(&logits, &flat);
        assert!((&out - &flat).abs().max().double_value(&[]) < 1e-6);
        // Any output lies within its channel's input range (no new intensities).
        let x = Tensor::rand([n, 3, h, w], (Kind::Float, Device::Cpu));
        let y = apply_kernels(&logits, &x);
        for c in 0..3 {
            let (xc, yc) = (x.select(1, c), y.select(1, c));
            assert!(yc.min().double_value(&[]) >= xc.min().double_value(&[]) - 1e-6);
            assert!(yc.max().double_value(&[]) <= xc.max().double_value(&[]) + 1e-6);
        }
        // A centre logit far above the others is the identity.
        let mut id = vec![0f32; KernelHead::LOGITS as usize];
        for (i, v) in id.iter_mut().enumerate() {
            if i as i64 % KERNEL_TAPS == KERNEL_TAPS / 2 {
                *v = 40.0;
            }
        }
        let id = Tensor::from_slice(&id)
            .view([1, KernelHead::LOGITS, 1, 1])
            .expand([n, KernelHead::LOGITS, h, w], false);
        let same = apply_kernels(&id, &x);
        assert!((&same - &x).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn the_kernel_head_starts_between_identity_and_a_box_and_keeps_flat_areas() {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = Output::new(&vs.root(), Head::Kernel, 8);
        let names: Vec<String> = vs.variables().into_keys().collect();
        assert!(
            names.contains(&"head.logits.weight".to_string()),
            "{names:?}"
        );
        assert!(names.contains(&"head.logits.bias".to_string()), "{names:?}");
        tch::manual_seed(2);
        let feat = Tensor::randn([1, 8, 16, 16], (Kind::Float, Device::Cpu));
        let flat = Tensor::full([1, 3, 16, 16], 0.37, (Kind::Float, Device::Cpu));
        let out = head.forward(&feat, &flat);
        assert!((&out - 0.37).abs().max().double_value(&[]) < 1e-6);
        let noise = Tensor::randn([1, 3, 16, 16], (Kind::Float, Device::Cpu)) * 0.1 + 0.5;
        let out = head.forward(&feat, &noise);
        let (sx, sy) = (
            noise.std(true).double_value(&[]),
            out.std(true).double_value(&[]),
        );
        assert!(sy < 0.8 * sx && sy > 0.1 * sx, "{sx} -> {sy}");
    }
}
