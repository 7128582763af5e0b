//! Training: random crops of clean images, 8-way flips/rotations, optional colour augmentation
//! (saturation, channel order), online noise synthesis,
//! L1 loss, AdamW (written out here so its state checkpoints exactly), flat-then-cosine
//! schedule, gradient-norm clipping, mixup, progressive feature augmentation (in the model),
//! frozen or trainable encoder, periodic validation, checkpoints and exact resume.
//!
//! Every random choice of step `s` is drawn from generators seeded by (seed, s), so a run
//! resumed from a checkpoint reproduces an uninterrupted one bit for bit.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::frame::ColorMatrix;
use crate::model::{ClipDenoise, Config};
use crate::research::noise::{self, NoiseMix};
use crate::research::train_pool::{PairPool, PoolSection};
use crate::weights::{self, Missing, Provenance, TensorMap};

/// The TOML training config (see configs/).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelSection,
    pub data: DataSection,
    #[serde(default)]
    pub noise: NoiseMix,
    #[serde(default)]
    pub optim: OptimSection,
    pub run: RunSection,
    /// Optional codec pool: crops that went through real H.264 round trips (see
    /// [`crate::research::train_pool`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<PoolSection>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSection {
    /// A preset name (`clip-rn50`, `small`, `tiny`, `nano`), or give `width` + `blocks`.
    pub preset: Option<String>,
    pub width: Option<i64>,
    pub blocks: Option<[i64; 3]>,
    #[serde(default = "default_aug")]
    pub aug_level: f64,
    /// Weights to start from: an encoder-only file (imported CLIP) or a full model.
    pub init: Option<PathBuf>,
    /// Keep the encoder frozen (the paper's recipe, with imported CLIP weights).
    #[serde(default)]
    pub freeze_encoder: bool,
}

fn default_aug() -> f64 {
    crate::model::AUG_LEVEL
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataSection {
    /// Folders of clean PNG/JPEG images.
    pub train_dirs: Vec<PathBuf>,
    /// Images of the first train folder (by sorted name, from the end) held out for validation.
    #[serde(default = "default_val_count")]
    pub val_holdout: usize,
    #[serde(default = "default_patch")]
    pub patch: i64,
    #[serde(default = "default_batch")]
    pub batch: i64,
    /// Colour augmentation of the clean crops: the share of crops that get it (0 = off, the
    /// default, which draws nothing from the RNG, so older runs reproduce bit for bit).
    #[serde(default)]
    pub color_prob: f64,
    /// Saturation factor range of the colour augmentation (1 = unchanged, > 1 more saturated;
    /// results clipped to [0, 1]).
    #[serde(default = "default_saturation")]
    pub saturation: [f64; 2],
    /// Also shuffle the RGB channels of an augmented crop (one of the 6 orders).
    #[serde(default)]
    pub channel_shuffle: bool,
}

fn default_val_count() -> usize {
    8
}
fn default_patch() -> i64 {
    128
}
fn default_batch() -> i64 {
    16
}
fn default_saturation() -> [f64; 2] {
    [1.0, 1.0]
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSection {
    pub lr: f64,
    pub lr_min: f64,
    pub weight_decay: f64,
    pub betas: [f64; 2],
    pub eps: f64,
    /// Total steps; the lr stays at `lr` for `flat_steps`, then follows a cosine to `lr_min`.
    pub steps: u64,
    pub flat_steps: u64,
    /// Gradient-norm clipping (0: off).
    pub grad_clip: f64,
    pub mixup_prob: f64,
    pub mixup_beta: f64,
}

impl Default for OptimSection {
    /// The paper's recipe.
    fn default() -> Self {
        OptimSection {
            lr: 3e-4,
            lr_min: 1e-6,
            weight_decay: 1e-4,
            betas: [0.9, 0.999],
            eps: 1e-8,
            steps: 300_000,
            flat_steps: 92_000,
            grad_clip: 0.01,
            mixup_prob: 0.5,
            mixup_beta: 1.2,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSection {
    /// Run folder: checkpoint.safetensors, model.safetensors, log.jsonl.
    pub dir: PathBuf,
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_ckpt_minutes")]
    pub checkpoint_minutes: f64,
    #[serde(default = "default_val_every")]
    pub val_every: u64,
    #[serde(default)]
    pub threads: Option<i32>,
    #[serde(default = "default_device")]
    pub device: String,
}

fn default_ckpt_minutes() -> f64 {
    10.0
}
fn default_val_every() -> u64 {
    1000
}
fn default_device() -> String {
    "auto".into()
}

impl TrainConfig {
    /// Read a config; relative paths in it are taken relative to the config file's folder.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg: TrainConfig = toml::from_str(&text)
            .map_err(|e| Error::format(path, format!("bad training config: {}", e.message())))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        cfg.data.train_dirs.iter_mut().for_each(fix);
        fix(&mut cfg.run.dir);
        if let Some(p) = cfg.model.init.as_mut() {
            fix(p);
        }
        if let Some(pool) = cfg.pool.as_mut() {
            fix(&mut pool.dir);
            pool.video_dirs.iter_mut().for_each(fix);
        }
        cfg.validate()
            .map_err(|e| Error::format(path, e.to_string()))?;
        Ok(cfg)
    }

    pub fn model_config(&self) -> Result<Config> {
        let mut c = match (&self.model.preset, self.model.width, self.model.blocks) {
            (Some(p), None, None) => Config::preset(p)?,
            (None, Some(width), Some(blocks)) => Config::new(width, blocks),
            _ => {
                return Err(Error::Config(
                    "give [model] preset, or width and blocks".into(),
                ))
            }
        };
        c.aug_level = self.model.aug_level;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        self.model_config()?;
        self.noise.validate()?;
        let o = &self.optim;
        let bad = |m: &str| Err(Error::Config(m.to_string()));
        if self.data.train_dirs.is_empty() {
            return bad("[data] train_dirs is empty");
        }
        if self.data.patch < 32 || self.data.patch % 32 != 0 || self.data.batch < 1 {
            return bad("[data] patch must be a multiple of 32 (>= 32) and batch >= 1");
        }
        let d = &self.data;
        if !((0.0..=1.0).contains(&d.color_prob) && noise::is_range(d.saturation)) {
            return bad("[data] color_prob must be in [0, 1] and saturation 0 <= lo <= hi");
        }
        if let Some(pool) = &self.pool {
            pool.validate(self.data.patch)?;
        }
        if !(o.lr > 0.0 && o.lr_min >= 0.0 && o.lr_min <= o.lr) || o.flat_steps > o.steps {
            return bad("[optim] needs lr > 0, 0 <= lr_min <= lr, flat_steps <= steps");
        }
        if !(0.0..=1.0).contains(&o.mixup_prob) || o.mixup_beta <= 0.0 || o.grad_clip < 0.0 {
            return bad("[optim] mixup_prob in [0, 1], mixup_beta > 0, grad_clip >= 0");
        }
        Ok(())
    }

    /// Learning rate at `step`: flat, then cosine to lr_min.
    pub fn lr_at(&self, step: u64) -> f64 {
        let o = &self.optim;
        if step < o.flat_steps {
            return o.lr;
        }
        let span = (o.steps - o.flat_steps).max(1) as f64;
        let t = ((step - o.flat_steps) as f64 / span).min(1.0);
        o.lr_min + 0.5 * (o.lr - o.lr_min) * (1.0 + (std::f64::consts::PI * t).cos())
    }
}

/// What the trainer reports; the CLI renders these.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Started {
        step: u64,
        total: u64,
        params: i64,
        images: usize,
        resumed: bool,
    },
    Step {
        step: u64,
        total: u64,
        loss: f64,
        lr: f64,
        steps_per_s: f64,
    },
    Validation {
        step: u64,
        psnr: f64,
    },
    Checkpoint {
        step: u64,
        path: PathBuf,
    },
    Finished {
        step: u64,
        model: PathBuf,
    },
}

/// Clean training images held in memory as u8 (3, H, W), sampled in proportion to their area.
struct Dataset {
    images: Vec<Tensor>,
    cumulative_area: Vec<f64>,
}

/// Read an image file as an RGB u8 tensor (3, H, W).
pub fn load_rgb8(path: &Path) -> Result<Tensor> {
    let img = image::open(path)
        .map_err(|e| Error::format(path, format!("cannot read image: {e}")))?
        .to_rgb8();
    let (w, h) = (img.width() as i64, img.height() as i64);
    Ok(Tensor::f_from_slice(img.as_raw())?
        .f_view([h, w, 3])?
        .f_permute([2, 0, 1])?
        .f_contiguous()?)
}

impl Dataset {
    fn new(paths: &[PathBuf], min_side: i64) -> Result<Self> {
        let mut images = Vec::new();
        let mut cumulative_area = Vec::new();
        let mut total = 0.0;
        for p in paths {
            let t = load_rgb8(p)?;
            let (h, w) = (t.size()[1], t.size()[2]);
            if h < min_side || w < min_side {
                continue;
            }
            total += (h * w) as f64;
            cumulative_area.push(total);
            images.push(t);
        }
        if images.is_empty() {
            return Err(Error::Input(format!(
                "no training image is at least {min_side}x{min_side}"
            )));
        }
        Ok(Dataset {
            images,
            cumulative_area,
        })
    }

    /// A batch of random crops with random flips/rotations, f32 (B, 3, P, P) in [0, 1].
    fn batch(&self, rng: &mut StdRng, batch: i64, patch: i64) -> Tensor {
        let total = *self.cumulative_area.last().expect("non-empty");
        let crops: Vec<Tensor> = (0..batch)
            .map(|_| {
                let a = rng.random::<f64>() * total;
                let i = self
                    .cumulative_area
                    .partition_point(|&c| c <= a)
                    .min(self.images.len() - 1);
                let img = &self.images[i];
                let (h, w) = (img.size()[1], img.size()[2]);
                let y = rng.random_range(0..=h - patch);
                let x = rng.random_range(0..=w - patch);
                let mut c = img.narrow(1, y, patch).narrow(2, x, patch);
                let k = rng.random_range(0..8i64);
                if k >= 4 {
                    c = c.flip([2]);
                }
                c.rot90(k % 4, [1, 2])
            })
            .collect();
        Tensor::stack(&crops, 0).to_kind(Kind::Float) / 255.0
    }
}

/// The six orders of the RGB channels.
const CHANNEL_ORDERS: [[i64; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

/// Colour augmentation of a clean batch (B, 3, H, W) in [0, 1]: each crop, with probability
/// `color_prob`, gets its saturation scaled around its Rec. 601 luma by a factor drawn from
/// `saturation` (clipped to [0, 1]), then with `channel_shuffle` one of the six channel orders.
/// Widens the colour statistics beyond the training photos' (McMaster's saturated colours).
/// Draws nothing from `rng` when `color_prob` is 0.
fn color_augment(x: &Tensor, d: &DataSection, rng: &mut StdRng) -> Tensor {
    if d.color_prob <= 0.0 {
        return x.shallow_clone();
    }
    let (kr, kb) = ColorMatrix::Bt601.kr_kb();
    let luma = Tensor::from_slice(&[kr as f32, (1.0 - kr - kb) as f32, kb as f32])
        .view([1, 3, 1, 1])
        .to_device(x.device());
    let crops: Vec<Tensor> = (0..x.size()[0])
        .map(|i| {
            let c = x.narrow(0, i, 1);
            if rng.random::<f64>() >= d.color_prob {
                return c;
            }
            let s = noise::lerp(d.saturation, rng.random::<f64>());
            let gray = (&c * &luma).sum_dim_intlist(1, true, Kind::Float);
            let c = (&gray + (&c - &gray) * s).clamp(0.0, 1.0);
            if !d.channel_shuffle {
                return c;
            }
            let order = CHANNEL_ORDERS[rng.random_range(0..6usize)];
            c.index_select(1, &Tensor::from_slice(&order).to_device(c.device()))
        })
        .collect();
    Tensor::cat(&crops, 0)
}

/// AdamW with decoupled weight decay, its moments kept as named tensors so they checkpoint.
struct AdamW {
    params: Vec<(String, Tensor)>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
}

impl AdamW {
    fn new(params: Vec<(String, Tensor)>) -> Self {
        let m = params.iter().map(|(_, p)| p.zeros_like()).collect();
        let v = params.iter().map(|(_, p)| p.zeros_like()).collect();
        AdamW { params, m, v }
    }

    /// Total gradient norm, then clip (if `clip > 0`) and update.
    fn step(&mut self, o: &OptimSection, lr: f64, t: u64, clip: f64) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let grads: Vec<Tensor> = self.params.iter().map(|(_, p)| p.grad()).collect();
        let norm = grads
            .iter()
            .filter(|g| g.defined())
            .map(|g| {
                g.f_square()?
                    .f_sum(Kind::Double)
                    .map(|s| s.double_value(&[]))
            })
            .sum::<Result<f64, _>>()?
            .sqrt();
        let scale = if clip > 0.0 && norm > clip {
            clip / (norm + 1e-6)
        } else {
            1.0
        };
        let (b1, b2) = (o.betas[0], o.betas[1]);
        let (bc1, bc2) = (1.0 - b1.powi(t as i32), 1.0 - b2.powi(t as i32));
        for (((_, p), g), (m, v)) in self
            .params
            .iter()
            .zip(&grads)
            .zip(self.m.iter_mut().zip(self.v.iter_mut()))
        {
            if !g.defined() {
                continue;
            }
            let g = g * scale;
            let mut p = p.shallow_clone();
            let _ = p.f_mul_scalar_(1.0 - lr * o.weight_decay)?;
            let _ = m.f_mul_scalar_(b1)?.f_add_(&(&g * (1.0 - b1)))?;
            let _ = v.f_mul_scalar_(b2)?.f_add_(&(g.square() * (1.0 - b2)))?;
            let denom = (&*v / bc2).sqrt() + o.eps;
            let _ = p.f_sub_(&(&*m / &denom * (lr / bc1)))?;
        }
        Ok(norm)
    }
}

const CKPT_STEP: &str = "train.step";
const CKPT_TRAIN_CONFIG: &str = "train.config";

/// A training run in progress.
pub struct Trainer {
    pub cfg: TrainConfig,
    model_cfg: Config,
    vs: nn::VarStore,
    model: ClipDenoise,
    adam: AdamW,
    data: Dataset,
    val: Vec<(Tensor, Tensor)>,
    step: u64,
    device: Device,
    resumed: bool,
    /// The codec pool's pairs and their generation, once the caller has loaded them.
    pool: Option<(u64, PairPool)>,
}

impl Trainer {
    /// Build the run; resume from `<run.dir>/checkpoint.safetensors` if it exists.
    pub fn new(cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        if let Some(n) = cfg.run.threads {
            tch::set_num_threads(n);
        }
        let device = cfg
            .run
            .device
            .parse::<crate::inference::DeviceRequest>()?
            .resolve()?;
        let model_cfg = cfg.model_config()?;
        let vs = nn::VarStore::new(device);
        tch::manual_seed(cfg.run.seed as i64);
        let model = ClipDenoise::new(&vs.root(), &model_cfg);
        if let Some(init) = &cfg.model.init {
            let (t, _) = weights::read_safetensors(init)?;
            weights::load_into(&vs, &t, init, Missing::DecoderMayBeMissing)?;
        }
        let mut trainable: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(n, t)| {
                t.requires_grad() && !(cfg.model.freeze_encoder && n.starts_with("encoder."))
            })
            .collect();
        trainable.sort_by(|a, b| a.0.cmp(&b.0));
        if cfg.model.freeze_encoder {
            for (n, t) in vs.variables() {
                if n.starts_with("encoder.") {
                    let _ = t.set_requires_grad(false);
                }
            }
        }
        let adam = AdamW::new(trainable);

        let mut paths = Vec::new();
        let mut held_out = Vec::new();
        for (i, dir) in cfg.data.train_dirs.iter().enumerate() {
            let mut v = crate::research::imageio::list_images(dir)?;
            if i == 0 {
                let k = cfg.data.val_holdout.min(v.len().saturating_sub(1));
                held_out = v.split_off(v.len() - k);
            }
            paths.extend(v);
        }
        let data = Dataset::new(&paths, cfg.data.patch)?;
        let val = held_out
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let img = load_rgb8(p)?;
                let (h, w) = (img.size()[1], img.size()[2]);
                let s = 256.min(h).min(w) / 32 * 32;
                let clean = (img
                    .narrow(1, (h - s) / 2, s)
                    .narrow(2, (w - s) / 2, s)
                    .to_kind(Kind::Float)
                    / 255.0)
                    .unsqueeze(0)
                    .to_device(device);
                tch::manual_seed(1_000_000 + i as i64);
                let noisy = crate::research::noise::gaussian(&clean, 25.0);
                Ok((clean, noisy))
            })
            .collect::<Result<Vec<_>>>()?;

        let mut t = Trainer {
            cfg,
            model_cfg,
            vs,
            model,
            adam,
            data,
            val,
            step: 0,
            device,
            resumed: false,
            pool: None,
        };
        let ckpt = t.checkpoint_path();
        if ckpt.exists() {
            t.load_checkpoint(&ckpt)?;
            t.resumed = true;
        }
        Ok(t)
    }

    pub fn step(&self) -> u64 {
        self.step
    }

    /// The clean training images, u8 (3, H, W) (stills for the codec pool's clips).
    pub fn clean_images(&self) -> &[Tensor] {
        &self.data.images
    }

    /// The codec pool generation loaded, if any.
    pub fn pool_generation(&self) -> Option<u64> {
        self.pool.as_ref().map(|(g, _)| *g)
    }

    /// Use these pairs, made for `generation`, for the pool's share of the crops.
    pub fn set_pool(&mut self, generation: u64, pool: PairPool) {
        self.pool = Some((generation, pool));
    }

    pub fn checkpoint_path(&self) -> PathBuf {
        self.cfg.run.dir.join("checkpoint.safetensors")
    }

    pub fn model_path(&self) -> PathBuf {
        self.cfg.run.dir.join("model.safetensors")
    }

    fn seed_for(&self, step: u64) -> u64 {
        self.cfg
            .run
            .seed
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(step)
    }

    /// One optimisation step; returns the L1 loss.
    pub fn train_step(&mut self) -> Result<f64> {
        let s = self.step;
        let seed = self.seed_for(s);
        let mut rng = StdRng::seed_from_u64(seed);
        tch::manual_seed(seed as i64);
        let (b, p) = (self.cfg.data.batch, self.cfg.data.patch);
        let clean = self.data.batch(&mut rng, b, p).to_device(self.device);
        let clean = color_augment(&clean, &self.cfg.data, &mut rng);
        let (mut noisy, mut clean) = self.cfg.noise.apply(&clean, &mut rng)?;
        if let Some(cfg) = &self.cfg.pool {
            let g = cfg.generation(s);
            let pool = match &self.pool {
                Some((have, pool)) if *have == g => pool,
                _ => {
                    return Err(Error::Config(format!(
                        "step {s} trains on codec pool generation {g}, which is not loaded"
                    )))
                }
            };
            let (mut n, mut c) = (Vec::new(), Vec::new());
            for i in 0..b {
                let (ni, ci) = if rng.random::<f64>() < cfg.prob {
                    let (x, y) = pool.crop(&mut rng, p);
                    (x.to_device(self.device), y.to_device(self.device))
                } else {
                    (noisy.narrow(0, i, 1), clean.narrow(0, i, 1))
                };
                n.push(ni);
                c.push(ci);
            }
            (noisy, clean) = (Tensor::cat(&n, 0), Tensor::cat(&c, 0));
        }
        let o = &self.cfg.optim;
        if b > 1 && rng.random::<f64>() < o.mixup_prob {
            let g = Tensor::f_full([2], o.mixup_beta, (Kind::Double, Device::Cpu))?
                .f_internal_standard_gamma()?;
            let (g0, g1) = (g.double_value(&[0]), g.double_value(&[1]));
            let lam = g0 / (g0 + g1);
            let perm = Tensor::f_randperm(b, (Kind::Int64, self.device))?;
            clean = &clean * lam + clean.index_select(0, &perm) * (1.0 - lam);
            noisy = &noisy * lam + noisy.index_select(0, &perm) * (1.0 - lam);
        }
        let out = self.model.forward_t(&noisy, true);
        let loss = out.f_sub(&clean)?.f_abs()?.f_mean(Kind::Float)?;
        for (_, p) in &self.adam.params {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        loss.backward();
        let lr = self.cfg.lr_at(s);
        let clip = self.cfg.optim.grad_clip;
        self.adam.step(&self.cfg.optim, lr, s + 1, clip)?;
        self.step += 1;
        let l = loss.double_value(&[]);
        if !l.is_finite() {
            return Err(Error::Torch(format!("loss became {l} at step {s}")));
        }
        Ok(l)
    }

    /// Mean PSNR (dB) on the held-out images with gaussian sigma 25.
    pub fn validate(&self) -> Result<f64> {
        let _g = tch::no_grad_guard();
        let mut total = 0.0;
        for (clean, noisy) in &self.val {
            let out = self.model.forward_t(noisy, false).clamp(0.0, 1.0);
            let mse = (out - clean).square().mean(Kind::Double).double_value(&[]);
            total += 10.0 * (1.0 / mse.max(1e-12)).log10();
        }
        Ok(total / self.val.len().max(1) as f64)
    }

    fn all_tensors(&self) -> TensorMap {
        let mut t: TensorMap = self.vs.variables().into_iter().collect();
        for ((n, _), (m, v)) in self
            .adam
            .params
            .iter()
            .zip(self.adam.m.iter().zip(&self.adam.v))
        {
            t.insert(format!("optim.m.{n}"), m.shallow_clone());
            t.insert(format!("optim.v.{n}"), v.shallow_clone());
        }
        t
    }

    /// Write the checkpoint (weights, optimizer moments, step) atomically.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        std::fs::create_dir_all(&self.cfg.run.dir).map_err(|e| Error::io(&self.cfg.run.dir, e))?;
        let mut meta = weights::model_metadata(&self.model_cfg, &self.provenance());
        meta.insert(CKPT_STEP.into(), self.step.to_string());
        meta.insert(
            CKPT_TRAIN_CONFIG.into(),
            toml::to_string(&self.cfg).map_err(|e| Error::Config(e.to_string()))?,
        );
        let path = self.checkpoint_path();
        weights::write_safetensors(&path, &self.all_tensors(), meta)?;
        Ok(path)
    }

    fn load_checkpoint(&mut self, path: &Path) -> Result<()> {
        let (mut t, meta) = weights::read_safetensors(path)?;
        let step: u64 = meta
            .get(CKPT_STEP)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Error::format(path, "not a training checkpoint (no step)"))?;
        let mut moments = HashMap::new();
        t.retain(|k, v| {
            if k.starts_with("optim.") {
                moments.insert(k.clone(), v.shallow_clone());
                false
            } else {
                true
            }
        });
        weights::load_into(&self.vs, &t, path, Missing::Error)?;
        let _g = tch::no_grad_guard();
        for ((n, _), (m, v)) in self
            .adam
            .params
            .iter()
            .zip(self.adam.m.iter_mut().zip(self.adam.v.iter_mut()))
        {
            for (dst, key) in [(m, format!("optim.m.{n}")), (v, format!("optim.v.{n}"))] {
                let src = moments
                    .get(&key)
                    .ok_or_else(|| Error::weights(path, format!("missing tensor {key}")))?;
                dst.f_copy_(src)?;
            }
        }
        self.step = step;
        Ok(())
    }

    pub fn provenance(&self) -> Provenance {
        let dirs: Vec<String> = self
            .cfg
            .data
            .train_dirs
            .iter()
            .map(|d| {
                d.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            })
            .collect();
        Provenance {
            source: format!("trained by clipdenoise train (seed {})", self.cfg.run.seed),
            training_data: dirs.join(", "),
            steps: self.step,
        }
    }

    /// Write the model alone (no optimizer state), ready for inference.
    pub fn export(&self, path: &Path) -> Result<()> {
        weights::save_model(path, &self.vs, &self.model_cfg, &self.provenance())
    }

    /// Train until `optim.steps`, `max_steps` more steps, or `stop` is set; checkpoints every
    /// `checkpoint_minutes` and at the end.
    pub fn run(
        &mut self,
        max_steps: Option<u64>,
        stop: &AtomicBool,
        mut on_event: impl FnMut(TrainEvent),
    ) -> Result<()> {
        let total = self.cfg.optim.steps;
        let end = max_steps.map_or(total, |m| (self.step + m).min(total));
        let params = self.adam.params.iter().map(|(_, p)| p.numel() as i64).sum();
        on_event(TrainEvent::Started {
            step: self.step,
            total,
            params,
            images: self.data.images.len(),
            resumed: self.resumed,
        });
        let every = Duration::from_secs_f64(self.cfg.run.checkpoint_minutes * 60.0);
        let mut last_ckpt = Instant::now();
        let (mut window_start, mut window_steps) = (Instant::now(), 0u32);
        while self.step < end && !stop.load(Ordering::Relaxed) {
            let loss = self.train_step()?;
            window_steps += 1;
            let rate = window_steps as f64 / window_start.elapsed().as_secs_f64().max(1e-9);
            if window_steps >= 50 {
                (window_start, window_steps) = (Instant::now(), 0);
            }
            on_event(TrainEvent::Step {
                step: self.step,
                total,
                loss,
                lr: self.cfg.lr_at(self.step),
                steps_per_s: rate,
            });
            if self.cfg.run.val_every > 0 && self.step % self.cfg.run.val_every == 0 {
                on_event(TrainEvent::Validation {
                    step: self.step,
                    psnr: self.validate()?,
                });
            }
            if last_ckpt.elapsed() >= every {
                let path = self.save_checkpoint()?;
                self.export(&self.model_path())?;
                on_event(TrainEvent::Checkpoint {
                    step: self.step,
                    path,
                });
                last_ckpt = Instant::now();
            }
        }
        let path = self.save_checkpoint()?;
        on_event(TrainEvent::Checkpoint {
            step: self.step,
            path,
        });
        self.export(&self.model_path())?;
        on_event(TrainEvent::Finished {
            step: self.step,
            model: self.model_path(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(color_prob: f64, saturation: [f64; 2], channel_shuffle: bool) -> DataSection {
        DataSection {
            train_dirs: vec![],
            val_holdout: 0,
            patch: 32,
            batch: 1,
            color_prob,
            saturation,
            channel_shuffle,
        }
    }

    /// Two pixels: a gray one and a reddish one, (1, 3, 1, 2).
    fn pixels() -> Tensor {
        Tensor::from_slice(&[0.5f32, 0.6, 0.5, 0.4, 0.5, 0.4]).view([1, 3, 1, 2])
    }

    #[test]
    fn colour_augmentation_off_changes_nothing_and_draws_nothing() {
        let x = pixels();
        let mut rng = StdRng::seed_from_u64(7);
        let y = color_augment(&x, &section(0.0, [2.0, 2.0], true), &mut rng);
        assert!(y.equal(&x));
        let mut fresh = StdRng::seed_from_u64(7);
        assert_eq!(rng.random::<u64>(), fresh.random::<u64>());
    }

    #[test]
    fn saturation_moves_colours_away_from_luma_and_keeps_gray() {
        let y = color_augment(
            &pixels(),
            &section(1.0, [2.0, 2.0], false),
            &mut StdRng::seed_from_u64(1),
        );
        let v = |c: i64, w: i64| y.double_value(&[0, c, 0, w]);
        // The gray pixel stays gray.
        for c in 0..3 {
            assert!(
                (v(c, 0) - 0.5).abs() < 1e-6,
                "gray pixel changed: {}",
                v(c, 0)
            );
        }
        // (0.6, 0.4, 0.4): luma 0.4598, so x2 saturation gives (0.7402, 0.3196, 0.3196).
        let luma = 0.299 * 0.6 + 0.587 * 0.4 + 0.114 * 0.4;
        assert!((v(0, 1) - (luma + 2.0 * (0.6 - luma))).abs() < 1e-5);
        assert!((v(1, 1) - (luma + 2.0 * (0.4 - luma))).abs() < 1e-5);
        // A large factor clips to [0, 1].
        let z = color_augment(
            &pixels(),
            &section(1.0, [9.0, 9.0], false),
            &mut StdRng::seed_from_u64(1),
        );
        assert_eq!(z.max().double_value(&[]), 1.0);
        assert!(z.min().double_value(&[]) >= 0.0);
    }

    #[test]
    fn channel_shuffle_only_reorders_channels_and_uses_every_order() {
        let x = Tensor::from_slice(&[0.1f32, 0.5, 0.9]).view([1, 3, 1, 1]);
        let d = section(1.0, [1.0, 1.0], true);
        let mut rng = StdRng::seed_from_u64(3);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let y = color_augment(&x, &d, &mut rng);
            let v: Vec<i64> = (0..3)
                .map(|c| (y.double_value(&[0, c, 0, 0]) * 10.0).round() as i64)
                .collect();
            let mut sorted = v.clone();
            sorted.sort();
            assert_eq!(
                sorted,
                vec![1, 5, 9],
                "values changed, not just reordered: {v:?}"
            );
            seen.insert(v);
        }
        assert_eq!(seen.len(), 6);
    }
}
