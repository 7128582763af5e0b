//! The training config (`clipdenoise train --config FILE.toml`, see configs/): the model, the
//! clean data and its augmentation, the noise mix, the optimiser and schedule, the run folder,
//! and the optional codec pool; parsing with paths relative to the file, validation, and the
//! learning-rate schedule.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Config, Head};
use crate::research::camera_ops::is_range;
use crate::research::noise::NoiseMix;
use crate::research::train_pool::PoolSection;

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
    /// Train for the coarse-grain pipeline: every step runs the network on the crops' four
    /// pixel-shuffled sub-images, then on their merge, and the loss is on that (saved in the
    /// model's config, so inference runs the same two passes).
    #[serde(default)]
    pub coarse_grain: bool,
    /// The output head: `"pixels"` (the paper's) or `"kernel"` (per-pixel kernels on the
    /// noisy input, see [`crate::model::Head`]). Starting a kernel head from a pixel model's
    /// `init` keeps everything but the pixel head's `last.weight`.
    #[serde(default)]
    pub head: Head,
    /// The kernel head's passes, one 3x3 kernel per dilation (absent: [1, 2]). From a kernel
    /// model with fewer passes (`init`), its passes are kept and the others start as
    /// near-identity passes ([`crate::model::warm_start_tensors`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_dilations: Option<Vec<i64>>,
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
    /// Every this many steps also write the model to `snapshots/model-step<N>.safetensors`
    /// (0: never): the inputs of `clipdenoise weights average` (stochastic weight averaging).
    #[serde(default)]
    pub snapshot_every: u64,
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
        c.coarse_grain = self.model.coarse_grain;
        c.head = self.model.head;
        c.kernel_dilations = self.model.kernel_dilations.clone();
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
        if !((0.0..=1.0).contains(&d.color_prob) && is_range(d.saturation)) {
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
