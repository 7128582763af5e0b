//! Training: random crops of clean images, 8-way flips/rotations, optional colour augmentation
//! (saturation, channel order), online noise synthesis,
//! L1 loss, AdamW (written out here so its state checkpoints exactly), flat-then-cosine
//! schedule, gradient-norm clipping, mixup, progressive feature augmentation (in the model),
//! frozen or trainable encoder, periodic validation, checkpoints and exact resume.
//!
//! Every random choice of step `s` is drawn from generators seeded by (seed, s), so a run
//! resumed from a checkpoint reproduces an uninterrupted one bit for bit: crops, colours and
//! noise choices from a `StdRng`, the noise fields and the feature augmentation from a
//! [`TorchRng`], both owned by the step. The model's initialisation and mixup's Beta draw and
//! permutation use libtorch's process-wide generator, seeded before each: one trainer per
//! process reproduces exactly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tch::{nn, Device, Kind, Tensor};

use crate::error::{Error, Result};
use crate::model::{warm_start_tensors, ClipDenoise, Config, WarmStart};
use crate::pad::pad_to_multiple;
use crate::pixel_shuffle::{self, Pass};
use crate::research::noise::TorchRng;
pub use crate::research::train_config::{
    DataSection, ModelSection, OptimSection, RunSection, TrainConfig,
};
pub use crate::research::train_data::load_rgb8;
use crate::research::train_data::{color_augment, Dataset};
use crate::research::train_pool::PairPool;
use crate::weights::{self, Missing, Provenance, TensorMap};

/// What the trainer reports; the CLI renders these.
#[derive(Debug, Clone)]
pub enum TrainEvent {
    Started {
        step: u64,
        total: u64,
        params: i64,
        images: usize,
        resumed: bool,
        /// How `[model] init`'s weights were fitted to this model (a fresh run only).
        warm_start: Option<WarmStart>,
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
    /// Model weights written at a multiple of `run.snapshot_every` (for weight averaging).
    Snapshot {
        step: u64,
        path: PathBuf,
    },
    Finished {
        step: u64,
        model: PathBuf,
    },
}

/// `f` on `t` reflect-padded to the network's multiple, cropped back to `t`'s size.
fn padded(t: &Tensor, f: impl FnOnce(&Tensor) -> Result<Tensor>) -> Result<Tensor> {
    let (h, w) = (t.size()[2], t.size()[3]);
    Ok(f(&pad_to_multiple(t, Config::MULTIPLE)?)?
        .f_narrow(2, 0, h)?
        .f_narrow(3, 0, w)?)
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
    /// How `init` was fitted to the model ([`warm_start_tensors`]); none when resumed.
    warm_start: Option<WarmStart>,
    /// The codec pool's pairs and their generation, once the caller has loaded them.
    pool: Option<(u64, PairPool)>,
}

/// The parameters the optimiser updates, sorted by name; with `freeze_encoder` the encoder's
/// are left out and stop requiring gradients.
fn trainable_params(vs: &nn::VarStore, freeze_encoder: bool) -> Vec<(String, Tensor)> {
    let mut trainable: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(n, t)| t.requires_grad() && !(freeze_encoder && n.starts_with("encoder.")))
        .collect();
    trainable.sort_by(|a, b| a.0.cmp(&b.0));
    if freeze_encoder {
        for (n, t) in vs.variables() {
            if n.starts_with("encoder.") {
                let _ = t.set_requires_grad(false);
            }
        }
    }
    trainable
}

/// The training crops' source and the validation set: the last `val_holdout` images of the
/// first folder are held out, centre-cropped (up to 256, multiples of 32) and given fixed
/// gaussian noise (sigma 25, seeded by their position).
fn training_data(cfg: &TrainConfig, device: Device) -> Result<(Dataset, Vec<(Tensor, Tensor)>)> {
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
            let mut rng = TorchRng::new(1_000_000 + i as u64);
            let noisy = crate::research::noise::gaussian(&clean, 25.0, &mut rng)?;
            Ok((clean, noisy))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((data, val))
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
        let mut warm_start = None;
        if let Some(init) = &cfg.model.init {
            let (mut t, meta) = weights::read_safetensors(init)?;
            // Another head: a pixel head is dropped for a kernel head (and back); a kernel
            // head's passes are kept and the config's other passes start near the identity.
            let from = weights::config_from_metadata(&meta, init)?;
            let fitted = warm_start_tensors(&mut t, from.as_ref(), &model_cfg)
                .map_err(|e| Error::weights(init, e.to_string()))?;
            weights::load_into(&vs, &t, init, Missing::DecoderMayBeMissing)?;
            warm_start = Some(fitted);
        }
        let adam = AdamW::new(trainable_params(&vs, cfg.model.freeze_encoder));
        let (data, val) = training_data(&cfg, device)?;

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
            warm_start,
            pool: None,
        };
        let ckpt = t.checkpoint_path();
        if ckpt.exists() {
            t.load_checkpoint(&ckpt)?;
            t.resumed = true;
            t.warm_start = None;
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

    /// Where the snapshot of `step` goes: `<run.dir>/snapshots/model-step<step>.safetensors`.
    pub fn snapshot_path(&self, step: u64) -> PathBuf {
        self.cfg
            .run
            .dir
            .join("snapshots")
            .join(format!("model-step{step}.safetensors"))
    }

    /// Write the model's weights as they are at this step into `snapshots/` (the folder is
    /// made on first use).
    fn save_snapshot(&self) -> Result<PathBuf> {
        let path = self.snapshot_path(self.step);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        self.export(&path)?;
        Ok(path)
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
        let mut noise_rng = TorchRng::new(seed);
        // Mixup's Beta draw and permutation come from libtorch's generator.
        tch::manual_seed(seed as i64);
        let (b, p) = (self.cfg.data.batch, self.cfg.data.patch);
        let clean = self.data.batch(&mut rng, b, p).to_device(self.device);
        let clean = color_augment(&clean, &self.cfg.data, &mut rng);
        let (mut noisy, mut clean) = self.cfg.noise.apply(&clean, &mut rng, &mut noise_rng)?;
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
        let mut normal = |f: &Tensor| noise_rng.randn_like(f);
        let out = if self.model_cfg.coarse_grain {
            // The second pass's output is left unclamped: L1 keeps its gradient everywhere.
            pixel_shuffle::two_passes(&noisy, |t, pass| {
                let y = padded(t, |p| self.model.forward_train(p, &mut normal))?;
                Ok(match pass {
                    Pass::SubImages => y.f_clamp(0.0, 1.0)?,
                    Pass::Merged => y,
                })
            })?
        } else {
            self.model.forward_train(&noisy, &mut normal)?
        };
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
            let out = self.eval_forward(noisy)?;
            let mse = (out - clean).square().mean(Kind::Double).double_value(&[]);
            total += 10.0 * (1.0 / mse.max(1e-12)).log10();
        }
        Ok(total / self.val.len().max(1) as f64)
    }

    /// The network in evaluation mode as inference runs it (two passes for a coarse-grain
    /// model), clamped to [0, 1]; `x`'s sides are multiples of 32.
    fn eval_forward(&self, x: &Tensor) -> Result<Tensor> {
        if !self.model_cfg.coarse_grain {
            return Ok(self.model.forward_t(x, false).clamp(0.0, 1.0));
        }
        pixel_shuffle::two_passes(x, |t, _| {
            Ok(padded(t, |p| Ok(self.model.forward_t(p, false)))?.f_clamp(0.0, 1.0)?)
        })
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
            warm_start: self.warm_start.take(),
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
            let snap = self.cfg.run.snapshot_every;
            if snap > 0 && self.step % snap == 0 {
                let path = self.save_snapshot()?;
                on_event(TrainEvent::Snapshot {
                    step: self.step,
                    path,
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
