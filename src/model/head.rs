//! The decoder's output head: the paper's 3x3 conv to RGB (`last.weight`), or a
//! kernel-predicting head (`head.logits.*`, issue 23) whose output is, per pixel and channel,
//! a convex combination of the noisy input's pixels: softmax weights over a 3x3 neighbourhood
//! at the first dilation of the config's `kernel_dilations` (default [1, 2]), applied to the
//! input, then a set over 3x3 at the next dilation applied to that, and so on (support
//! 2 * sum(dilations) + 1: 7x7 for [1, 2], 31x31 for [1, 2, 4, 8]). Weights are non-negative
//! and sum to 1, so a flat area keeps its level and colour, and the head cannot invent
//! intensities (KPN, Mildenhall et al. 2018; IDF, Kim et al. 2025). Kept apart from the
//! decoder's blocks so that their inference fusion and this head change independently. Also
//! the warm start of a head from another's weights ([`warm_start_tensors`]).

use std::collections::BTreeMap;

use tch::{nn, Kind, Tensor};

use super::config::{Config, Head, DEFAULT_KERNEL_DILATIONS};
use super::fused::{Act, InferConv};
use super::kernel_apply;
use super::layers::{conv3x3, infer_conv};
use crate::error::{Error, Result};

/// Taps of one pass (3x3).
pub const KERNEL_TAPS: i64 = 9;
/// The centre tap's initial logit: with the other logits near 0 the first steps average
/// about half the centre pixel with half its neighbours (between identity and a box filter).
const CENTRE_LOGIT: f64 = 2.0;
/// The initial logit weights are the default init scaled by this (logits start near the bias).
const INIT_WEIGHT_SCALE: f64 = 0.1;
/// A pass added by a warm start ([`warm_start_tensors`]) starts as (nearly) the identity: zero
/// weights and this centre logit over 0 for the other taps, so its 8 outer taps share
/// 8 / (8 + e^8) = 0.27 % of the weight (0.0007 of a [0, 1] step edge per pass at most), while
/// their gradients are not so small that AdamW cannot move them.
pub const WARM_START_CENTRE_LOGIT: f64 = 8.0;

/// What the decoder's last features become: the head and, once prepared for inference, its
/// conv's inference copy.
#[derive(Debug)]
pub struct Output {
    head: HeadKind,
    infer: Option<InferConv>,
    /// Prepared for inference with the CPU kernel of the kernel head's passes
    /// ([`kernel_apply`]), where it runs.
    fast_kernels: bool,
}

#[derive(Debug)]
enum HeadKind {
    /// `last`: 3x3 conv, no bias, to RGB.
    Pixels(nn::Conv2D),
    Kernel(KernelHead),
}

impl Output {
    /// `p` is the model's root path (`last.*` or `head.*` at the top level).
    pub fn new(p: &nn::Path, config: &Config) -> Output {
        let width = config.width;
        let head = match config.head {
            Head::Pixels => HeadKind::Pixels(conv3x3(p / "last", width, 3)),
            Head::Kernel => HeadKind::Kernel(KernelHead::new(
                &(p / "head"),
                width,
                config.kernel_dilations(),
            )),
        };
        Output {
            head,
            infer: None,
            fast_kernels: false,
        }
    }

    /// `feat`: the decoder's last features (N, width, H, W); `image`: the noisy input.
    pub fn forward(&self, feat: &Tensor, image: &Tensor) -> Tensor {
        let conv_out = |conv: &nn::Conv2D| match &self.infer {
            Some(c) => c.forward(feat, Act::None),
            None => feat.apply(conv),
        };
        match &self.head {
            HeadKind::Pixels(conv) => conv_out(conv),
            HeadKind::Kernel(k) => {
                let logits = conv_out(&k.logits);
                if self.fast_kernels && logits.device() == tch::Device::Cpu {
                    if let Ok(y) = kernel_apply::forward(&logits, image, &k.dilations) {
                        return y;
                    }
                }
                apply_kernels(&logits, image, &k.dilations)
            }
        }
    }

    /// The inference copy of the head's conv in `kind` and layout (`fuse`: as the decoder's).
    pub fn prepare(&mut self, kind: Kind, channels_last: bool, fuse: bool) {
        let conv = match &self.head {
            HeadKind::Pixels(conv) => conv,
            HeadKind::Kernel(k) => &k.logits,
        };
        self.infer = Some(infer_conv(conv, kind, channels_last, fuse));
        // The CPU kernel of the passes, unless the environment asks for the reference
        // (`CLIPDENOISE_KERNEL_APPLY=reference`: comparisons; the kernel's results differ from
        // it by float rounding).
        self.fast_kernels = kernel_apply::available()
            && std::env::var("CLIPDENOISE_KERNEL_APPLY").map_or(true, |v| v.trim() != "reference");
    }
}

/// Per-pixel kernel logits from the decoder's features (a 1x1 conv with bias), softmax-normed
/// and applied to the noisy input, one 3x3 pass per dilation.
#[derive(Debug)]
pub struct KernelHead {
    logits: nn::Conv2D,
    dilations: Vec<i64>,
}

impl KernelHead {
    /// Logits per pixel of `passes` passes: (pass, RGB channel, tap), `passes * 3 * 9` in all.
    pub const fn logits(passes: usize) -> i64 {
        passes as i64 * 3 * KERNEL_TAPS
    }

    /// The logit conv's bias for `passes` passes, each with the centre tap at `centre` and the
    /// others at 0.
    fn centre_bias(passes: usize, centre: f64) -> Vec<f32> {
        (0..Self::logits(passes))
            .map(|i| {
                if i % KERNEL_TAPS == KERNEL_TAPS / 2 {
                    centre as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    pub fn new(p: &nn::Path, width: i64, dilations: &[i64]) -> KernelHead {
        let n = Self::logits(dilations.len());
        let logits = nn::conv2d(p / "logits", width, n, 1, Default::default());
        tch::no_grad(|| {
            let _ = logits.ws.shallow_clone().f_mul_scalar_(INIT_WEIGHT_SCALE);
            if let Some(b) = &logits.bs {
                let centre = Self::centre_bias(dilations.len(), CENTRE_LOGIT);
                b.shallow_clone()
                    .copy_(&Tensor::from_slice(&centre).to_device(b.device()));
            }
        });
        KernelHead {
            logits,
            dilations: dilations.to_vec(),
        }
    }

    pub fn forward(&self, feat: &Tensor, image: &Tensor) -> Tensor {
        apply_kernels(&feat.apply(&self.logits), image, &self.dilations)
    }
}

/// Apply per-pixel kernels: `logits` (N, passes * 27, H, W) softmax-normed per (pass, channel)
/// over the 9 taps, pass `s` at `dilations[s]` on the previous pass's result, the first on
/// `image` (N, 3, H, W). Computed in f32 (returns f32); borders reflect (replicate where the
/// frame is too small for the dilation).
pub fn apply_kernels(logits: &Tensor, image: &Tensor, dilations: &[i64]) -> Tensor {
    let (n, h, w) = (image.size()[0], image.size()[2], image.size()[3]);
    let passes = dilations.len() as i64;
    let weights = logits
        .to_kind(Kind::Float)
        .view([n, passes, 3, KERNEL_TAPS, h, w])
        .softmax(3, Kind::Float);
    let mut y = image.to_kind(Kind::Float);
    for (s, &d) in dilations.iter().enumerate() {
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

/// What [`warm_start_tensors`] did to a model file's head so that it fits another model's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarmStart {
    /// The heads match: nothing changed.
    Same,
    /// A pixel head's `last.*` dropped: the kernel head starts fresh.
    DroppedPixelHead,
    /// A kernel head's `head.*` dropped: the pixel head starts fresh.
    DroppedKernelHead,
    /// The kernel passes of `from` copied into those of `to` at `kept` (one index of `to` per
    /// pass of `from`); the others added as near-identity passes
    /// ([`WARM_START_CENTRE_LOGIT`]).
    AddedPasses {
        from: Vec<i64>,
        to: Vec<i64>,
        kept: Vec<usize>,
    },
}

impl std::fmt::Display for WarmStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WarmStart::Same => write!(f, "the same head, all weights kept"),
            WarmStart::DroppedPixelHead => {
                write!(
                    f,
                    "the pixel head (last.weight) dropped, the kernel head starts fresh"
                )
            }
            WarmStart::DroppedKernelHead => {
                write!(
                    f,
                    "the kernel head (head.logits) dropped, the pixel head starts fresh"
                )
            }
            WarmStart::AddedPasses { from, to, kept } => {
                let added: Vec<i64> = (0..to.len())
                    .filter(|i| !kept.contains(i))
                    .map(|i| to[i])
                    .collect();
                write!(
                    f,
                    "kernel passes {from:?} kept as passes {kept:?} of {to:?}; passes at dilation \
                     {added:?} added as near-identity (centre logit {WARM_START_CENTRE_LOGIT}, zero weights)"
                )
            }
        }
    }
}

/// Make the output-head tensors of a model file (`tensors`, the model `from` describes: its
/// config, or `None` for a file without one, whose head is the paper's or absent) fit a model
/// of `to`, before they are loaded into it; the other tensors are left alone. A pixel head
/// into a kernel head (or back) is dropped, to start fresh. A kernel head into one with more
/// passes keeps its passes, in order, at the first places of `to`'s dilations that match
/// them, and the others start as near-identity passes, so that the model computes (almost)
/// what the file's did; a list that does not hold the file's in order is an error.
pub fn warm_start_tensors(
    tensors: &mut BTreeMap<String, Tensor>,
    from: Option<&Config>,
    to: &Config,
) -> Result<WarmStart> {
    let from_head = from.map_or(Head::Pixels, |c| c.head);
    let drop = |tensors: &mut BTreeMap<String, Tensor>, prefix: &str| {
        tensors.retain(|name, _| !name.starts_with(prefix))
    };
    match (from_head, to.head) {
        (Head::Pixels, Head::Pixels) => Ok(WarmStart::Same),
        (Head::Pixels, Head::Kernel) => {
            drop(tensors, "last.");
            Ok(WarmStart::DroppedPixelHead)
        }
        (Head::Kernel, Head::Pixels) => {
            drop(tensors, "head.");
            Ok(WarmStart::DroppedKernelHead)
        }
        (Head::Kernel, Head::Kernel) => {
            let old = from.map_or(&DEFAULT_KERNEL_DILATIONS[..], |c| c.kernel_dilations());
            let new = to.kernel_dilations();
            if old == new {
                return Ok(WarmStart::Same);
            }
            let kept = embed(old, new).ok_or_else(|| {
                Error::Config(format!(
                    "cannot warm-start kernel_dilations {new:?} from a kernel head with {old:?}: \
                     the new list must hold the old one in order"
                ))
            })?;
            let (Some(w), Some(b)) = (
                tensors.get("head.logits.weight"),
                tensors.get("head.logits.bias"),
            ) else {
                return Ok(WarmStart::Same);
            };
            let (w, b) = widen_logits(w, b, old.len(), new.len(), &kept)?;
            tensors.insert("head.logits.weight".into(), w);
            tensors.insert("head.logits.bias".into(), b);
            Ok(WarmStart::AddedPasses {
                from: old.to_vec(),
                to: new.to_vec(),
                kept,
            })
        }
    }
}

/// Where each of `old`'s dilations sits in `new`, in order (the first match each time).
fn embed(old: &[i64], new: &[i64]) -> Option<Vec<usize>> {
    let mut at = Vec::with_capacity(old.len());
    let mut next = 0;
    for &d in old {
        let i = next + new[next..].iter().position(|&x| x == d)?;
        at.push(i);
        next = i + 1;
    }
    Some(at)
}

/// The logit conv of `new_passes` passes from one of `old_passes`: old pass `j`'s 27 rows (weight
/// and bias) become pass `kept[j]`'s; the other passes get zero weights and the near-identity
/// bias. Checks the shapes (a file's tensors may be anything).
fn widen_logits(
    w: &Tensor,
    b: &Tensor,
    old_passes: usize,
    new_passes: usize,
    kept: &[usize],
) -> Result<(Tensor, Tensor)> {
    let rows = 3 * KERNEL_TAPS;
    let n_old = KernelHead::logits(old_passes);
    let (ws, bs) = (w.size(), b.size());
    if ws.len() != 4 || ws[0] != n_old || ws[2..] != [1, 1] || bs != [n_old] {
        return Err(Error::Config(format!(
            "head.logits has shapes {ws:?} / {bs:?}, not those of {old_passes} kernel passes \
             ([{n_old}, width, 1, 1] / [{n_old}])"
        )));
    }
    let w_new = w.f_new_zeros(
        [KernelHead::logits(new_passes), ws[1], 1, 1],
        (w.kind(), w.device()),
    )?;
    let bias = KernelHead::centre_bias(new_passes, WARM_START_CENTRE_LOGIT);
    let b_new = Tensor::f_from_slice(&bias)?
        .f_to_kind(b.kind())?
        .f_to_device(b.device())?;
    for (j, &i) in kept.iter().enumerate() {
        let (src, dst) = (j as i64 * rows, i as i64 * rows);
        w_new
            .f_narrow(0, dst, rows)?
            .f_copy_(&w.f_narrow(0, src, rows)?)?;
        b_new
            .f_narrow(0, dst, rows)?
            .f_copy_(&b.f_narrow(0, src, rows)?)?;
    }
    Ok((w_new, b_new))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn kernels_are_convex_combinations_of_the_input() {
        tch::manual_seed(5);
        let (n, h, w) = (2, 11, 14);
        let logits = Tensor::randn(
            [n, KernelHead::logits(DEFAULT_KERNEL_DILATIONS.len()), h, w],
            (Kind::Float, Device::Cpu),
        ) * 3.0;
        // A constant colour comes out exactly, whatever the logits.
        let flat = Tensor::ones([n, 3, h, w], (Kind::Float, Device::Cpu))
            * Tensor::from_slice(&[0.2f32, 0.5, 0.9]).view([1, 3, 1, 1]);
        let out = apply_kernels(&logits, &flat, &DEFAULT_KERNEL_DILATIONS);
        assert!((&out - &flat).abs().max().double_value(&[]) < 1e-6);
        // Any output lies within its channel's input range (no new intensities).
        let x = Tensor::rand([n, 3, h, w], (Kind::Float, Device::Cpu));
        let y = apply_kernels(&logits, &x, &DEFAULT_KERNEL_DILATIONS);
        for c in 0..3 {
            let (xc, yc) = (x.select(1, c), y.select(1, c));
            assert!(yc.min().double_value(&[]) >= xc.min().double_value(&[]) - 1e-6);
            assert!(yc.max().double_value(&[]) <= xc.max().double_value(&[]) + 1e-6);
        }
        // A centre logit far above the others is the identity.
        let mut id = vec![0f32; KernelHead::logits(DEFAULT_KERNEL_DILATIONS.len()) as usize];
        for (i, v) in id.iter_mut().enumerate() {
            if i as i64 % KERNEL_TAPS == KERNEL_TAPS / 2 {
                *v = 40.0;
            }
        }
        let id = Tensor::from_slice(&id)
            .view([1, KernelHead::logits(DEFAULT_KERNEL_DILATIONS.len()), 1, 1])
            .expand(
                [n, KernelHead::logits(DEFAULT_KERNEL_DILATIONS.len()), h, w],
                false,
            );
        let same = apply_kernels(&id, &x, &DEFAULT_KERNEL_DILATIONS);
        assert!((&same - &x).abs().max().double_value(&[]) < 1e-6);
    }

    #[test]
    fn wider_passes_stay_convex_keep_levels_and_means() {
        tch::manual_seed(9);
        let dilations = [1, 2, 4, 8];
        let (n, h, w) = (1, 64, 72);
        let logits = Tensor::randn(
            [n, KernelHead::logits(dilations.len()), h, w],
            (Kind::Float, Device::Cpu),
        ) * 3.0;
        // A constant colour comes out exactly (to float rounding), whatever the logits.
        let flat = Tensor::ones([n, 3, h, w], (Kind::Float, Device::Cpu))
            * Tensor::from_slice(&[0.2f32, 0.5, 0.9]).view([1, 3, 1, 1]);
        let out = apply_kernels(&logits, &flat, &dilations);
        assert!((&out - &flat).abs().max().double_value(&[]) < 1e-6);
        // A level plus zero-mean noise keeps its mean (the weights do not depend on the noise),
        // and every output lies within its channel's input range.
        let x = Tensor::randn([n, 3, h, w], (Kind::Float, Device::Cpu)) * 0.1 + 0.4;
        let y = apply_kernels(&logits, &x, &dilations);
        for c in 0..3 {
            let (xc, yc) = (x.select(1, c), y.select(1, c));
            let (mx, my) = (
                xc.mean(Kind::Float).double_value(&[]),
                yc.mean(Kind::Float).double_value(&[]),
            );
            assert!((mx - my).abs() < 0.005, "channel {c}: mean {mx} -> {my}");
            assert!(yc.min().double_value(&[]) >= xc.min().double_value(&[]) - 1e-6);
            assert!(yc.max().double_value(&[]) <= xc.max().double_value(&[]) + 1e-6);
        }
        // The wider support averages more: less noise left than with the first two passes.
        let two = apply_kernels(&logits.narrow(1, 0, KernelHead::logits(2)), &x, &[1, 2]);
        let (s4, s2) = (
            y.std(true).double_value(&[]),
            two.std(true).double_value(&[]),
        );
        assert!(s4 < s2, "{s2} -> {s4}");
        // Frames smaller than a dilation still work (replicate borders).
        let small = Tensor::rand([1, 3, 5, 6], (Kind::Float, Device::Cpu));
        let l = Tensor::zeros([1, KernelHead::logits(4), 5, 6], (Kind::Float, Device::Cpu));
        assert_eq!(apply_kernels(&l, &small, &dilations).size(), [1, 3, 5, 6]);
    }

    #[test]
    fn the_cpu_kernel_computes_the_reference_passes_to_float_rounding() {
        if !kernel_apply::available() {
            eprintln!("no AVX-512 on this CPU: the reference runs, nothing to compare");
            return;
        }
        tch::manual_seed(13);
        for (dilations, (n, h, w)) in [
            (vec![1, 2], (2, 37, 50)),
            (vec![1, 2, 4, 8], (1, 64, 96)),
            (vec![8, 1, 64], (1, 20, 70)),
            (vec![2, 4], (1, 3, 5)),
        ] {
            let p = dilations.len();
            let logits =
                Tensor::randn([n, KernelHead::logits(p), h, w], (Kind::Float, Device::Cpu)) * 4.0;
            // Channels-last logits, as the inference conv writes them.
            let logits = crate::model::to_layout(&logits, true);
            let x = Tensor::rand([n, 3, h, w], (Kind::Float, Device::Cpu));
            let want = apply_kernels(&logits, &x, &dilations);
            let got = kernel_apply::forward(&logits, &x, &dilations).unwrap();
            assert_eq!(got.size(), want.size());
            let err = (&got - &want).abs().max().double_value(&[]);
            assert!(err < 2e-6, "{dilations:?} {n}x{h}x{w}: off by {err}");
            // bf16 logits as bf16 inference gives them: the same after the cast.
            let lb = logits.to_kind(Kind::BFloat16);
            let got = kernel_apply::forward(&lb, &x, &dilations).unwrap();
            let err = (&got - apply_kernels(&lb, &x, &dilations))
                .abs()
                .max()
                .double_value(&[]);
            assert!(err < 2e-6, "bf16 {dilations:?}: off by {err}");
        }
        // A shape it does not take is an error (the caller runs the reference), not a crash.
        let x = Tensor::rand([1, 3, 8, 8], (Kind::Float, Device::Cpu));
        let bad = Tensor::zeros([1, 26, 8, 8], (Kind::Float, Device::Cpu));
        assert!(kernel_apply::forward(&bad, &x, &[1]).is_err());
    }

    #[test]
    fn warm_start_keeps_old_passes_in_order_and_drops_other_heads() {
        let kernel = |d: Option<Vec<i64>>| Config {
            head: Head::Kernel,
            kernel_dilations: d,
            ..Config::new(8, [1, 1, 1])
        };
        let (old, wide) = (kernel(None), kernel(Some(vec![4, 1, 8, 2])));
        let w = Tensor::randn([54, 8, 1, 1], (Kind::Float, Device::Cpu));
        let b = Tensor::randn([54], (Kind::Float, Device::Cpu));
        let mut t = BTreeMap::from([
            ("head.logits.weight".to_string(), w.copy()),
            ("head.logits.bias".to_string(), b.copy()),
            ("up_path.0.x".to_string(), b.copy()),
        ]);
        let done = warm_start_tensors(&mut t, Some(&old), &wide).unwrap();
        assert_eq!(
            done,
            WarmStart::AddedPasses {
                from: vec![1, 2],
                to: vec![4, 1, 8, 2],
                kept: vec![1, 3]
            }
        );
        let (nw, nb) = (&t["head.logits.weight"], &t["head.logits.bias"]);
        assert_eq!(nw.size(), [108, 8, 1, 1]);
        assert!(nw.narrow(0, 27, 27).equal(&w.narrow(0, 0, 27)));
        assert!(nw.narrow(0, 81, 27).equal(&w.narrow(0, 27, 27)));
        assert!(nb.narrow(0, 81, 27).equal(&b.narrow(0, 27, 27)));
        assert_eq!(
            nw.narrow(0, 0, 27).abs().sum(Kind::Float).double_value(&[]),
            0.0
        );
        let added: Vec<f32> = Vec::try_from(nb.narrow(0, 54, 27)).unwrap();
        for (i, v) in added.iter().enumerate() {
            let want = if i % 9 == 4 {
                WARM_START_CENTRE_LOGIT as f32
            } else {
                0.0
            };
            assert_eq!(*v, want, "{i}");
        }
        assert!(t["up_path.0.x"].equal(&b), "another tensor touched");
        // The same passes: nothing to do; not in order: a clear error.
        assert_eq!(
            warm_start_tensors(&mut t, Some(&wide), &wide).unwrap(),
            WarmStart::Same
        );
        let mut t2 = BTreeMap::from([
            ("head.logits.weight".to_string(), w.copy()),
            ("head.logits.bias".to_string(), b.copy()),
        ]);
        let err = warm_start_tensors(&mut t2, Some(&old), &kernel(Some(vec![2, 1])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("[2, 1]") && err.contains("[1, 2]"), "{err}");
        // A head of the wrong size in the file is refused, not misread.
        let err = warm_start_tensors(&mut t2, Some(&wide), &kernel(Some(vec![4, 1, 8, 2, 16])))
            .unwrap_err()
            .to_string();
        assert!(err.contains("not those of 4 kernel passes"), "{err}");
        // A pixel head into a kernel head and back: dropped.
        let mut px = BTreeMap::from([("last.weight".to_string(), w.copy())]);
        let tiny = Config::new(8, [1, 1, 1]);
        assert_eq!(
            warm_start_tensors(&mut px, None, &wide).unwrap(),
            WarmStart::DroppedPixelHead
        );
        assert!(px.is_empty());
        let mut k = BTreeMap::from([("head.logits.bias".to_string(), b.copy())]);
        assert_eq!(
            warm_start_tensors(&mut k, Some(&old), &tiny).unwrap(),
            WarmStart::DroppedKernelHead
        );
        assert!(k.is_empty());
    }

    #[test]
    fn the_kernel_head_starts_between_identity_and_a_box_and_keeps_flat_areas() {
        let vs = nn::VarStore::new(Device::Cpu);
        let head = Output::new(
            &vs.root(),
            &Config {
                head: Head::Kernel,
                ..Config::new(8, [1, 1, 1])
            },
        );
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
