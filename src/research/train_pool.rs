//! The codec pool of training: (noisy, clean) frame pairs that went through a real H.264 round
//! trip. The library makes the clips to encode (camera noise on moving crops, seeded by the
//! pool's generation) and samples training crops from a pool folder; the encoding itself
//! (x264 through GStreamer) is the CLI's (`clipdenoise train` regenerates the pool every
//! `regen_steps` steps, so the codec sees ever new clips while a step's data stays a pure
//! function of (seed, step)).
//!
//! Why a cached pool and not x264 in the loop: one 30-frame round trip yields 30 related
//! pairs and costs far less per frame than encoding single crops, inter-frame coding (the
//! P/B-frame smearing of noise that phones' files show) needs sequences anyway, and a folder
//! of PNG pairs keeps training reproducible and resumable without GStreamer in the library.
//!
//! Pool folder layout: `NNNNN_noisy.png` and `NNNNN_clean.png` (the camera's clean frame,
//! the target), plus `generation.txt` with the generation number.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::research::camera_ops::{is_range, lerp};
use crate::research::isp_noise::{Camera, IspNoise};

/// `[pool]` of a training config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSection {
    /// Where the current generation's pairs live.
    pub dir: PathBuf,
    /// Share of the training crops taken from the pool instead of the noise mix.
    pub prob: f64,
    /// A new generation every this many steps (generation = step / regen_steps).
    #[serde(default = "default_regen")]
    pub regen_steps: u64,
    /// Folders whose subfolders are frame sequences (each a clip, frames sorted by name).
    #[serde(default)]
    pub video_dirs: Vec<PathBuf>,
    /// Clips per generation: from the sequences, and from still training images panned
    /// across (the `[data] train_dirs`).
    #[serde(default = "default_clips")]
    pub sequence_clips: usize,
    #[serde(default = "default_clips")]
    pub still_clips: usize,
    /// Frames encoded per clip, and how many of them are kept as pairs.
    #[serde(default = "default_frames")]
    pub frames: usize,
    #[serde(default = "default_keep")]
    pub keep: usize,
    /// Side of the square clip (even, >= the training patch).
    #[serde(default = "default_size")]
    pub size: i64,
    /// x264 CRF range (pass=qual quantizer) and speed presets, drawn per clip.
    #[serde(default = "default_crf")]
    pub crf: [f64; 2],
    #[serde(default = "default_presets")]
    pub presets: Vec<String>,
    /// The cameras filming the clips (a camera per clip, noise per frame).
    #[serde(default)]
    pub camera: IspNoise,
}

fn default_regen() -> u64 {
    2000
}
fn default_clips() -> usize {
    16
}
fn default_frames() -> usize {
    24
}
fn default_keep() -> usize {
    8
}
fn default_size() -> i64 {
    256
}
fn default_crf() -> [f64; 2] {
    [16.0, 34.0]
}
fn default_presets() -> Vec<String> {
    ["veryfast", "faster", "medium", "slow"]
        .map(String::from)
        .to_vec()
}

impl PoolSection {
    pub fn validate(&self, patch: i64) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("[pool] {m}")));
        if !(0.0..=1.0).contains(&self.prob) {
            return bad(format!("prob {} must be in [0, 1]", self.prob));
        }
        if self.regen_steps == 0 || self.frames < 2 || self.keep == 0 || self.keep > self.frames {
            return bad("needs regen_steps >= 1, frames >= 2, 1 <= keep <= frames".into());
        }
        if self.size < patch || self.size % 2 != 0 {
            return bad(format!(
                "size {} must be even and >= the patch {patch}",
                self.size
            ));
        }
        if !(is_range(self.crf) && self.crf[1] <= 50.0) {
            return bad(format!("crf range {:?} must be within [0, 50]", self.crf));
        }
        if self.presets.is_empty() || self.sequence_clips + self.still_clips == 0 {
            return bad("needs at least one preset and one clip".into());
        }
        self.camera.validate()
    }

    /// The generation that `step` trains on.
    pub fn generation(&self, step: u64) -> u64 {
        step / self.regen_steps
    }
}

/// One clip to encode: the camera's clean frames (targets) and noisy frames, RGB u8 (3, S, S),
/// with the encoder settings drawn for it.
pub struct PoolClip {
    pub clean: Vec<Tensor>,
    pub noisy: Vec<Tensor>,
    pub crf: u32,
    pub preset: String,
    /// Indices of the frames kept as pairs.
    pub keep: Vec<usize>,
}

fn to_u8(x: &Tensor) -> Result<Tensor> {
    Ok((x * 255.0)
        .f_round()?
        .f_clamp(0.0, 255.0)?
        .f_to_kind(Kind::Uint8)?
        .f_squeeze_dim(0)?)
}

/// The clips of generation `generation`: `sequences` are frame sequences (u8 (3, H, W) each),
/// `stills` still images (u8 (3, H, W)); both at least `size` on each side.
pub fn make_clips(
    cfg: &PoolSection,
    seed: u64,
    generation: u64,
    sequences: &[Vec<Tensor>],
    stills: &[Tensor],
) -> Result<Vec<PoolClip>> {
    let mut rng = StdRng::seed_from_u64(seed ^ generation.wrapping_mul(0xA24B_AED4_963E_E407));
    let mut clips = Vec::new();
    let s = cfg.size;
    for k in 0..cfg.sequence_clips + cfg.still_clips {
        let from_sequence = k < cfg.sequence_clips && !sequences.is_empty();
        let frames: Vec<Tensor> = if from_sequence {
            let seq = &sequences[rng.random_range(0..sequences.len())];
            let start = rng.random_range(0..=seq.len().saturating_sub(cfg.frames));
            let (h, w) = (seq[0].size()[1], seq[0].size()[2]);
            let (y, x) = (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
            (0..cfg.frames)
                .map(|i| {
                    seq[(start + i).min(seq.len() - 1)]
                        .narrow(1, y, s)
                        .narrow(2, x, s)
                })
                .collect()
        } else if !stills.is_empty() {
            pan(
                &stills[rng.random_range(0..stills.len())],
                cfg.frames,
                s,
                &mut rng,
            )
        } else {
            continue;
        };
        let cam = Camera::draw(&cfg.camera, &mut rng);
        let mut clean = Vec::with_capacity(frames.len());
        let mut noisy = Vec::with_capacity(frames.len());
        for f in &frames {
            let x = f.f_to_kind(Kind::Float)?.f_unsqueeze(0)? / 255.0;
            let (n, t) = cam.capture(&x, &mut rng)?;
            noisy.push(to_u8(&n)?);
            clean.push(to_u8(&t)?);
        }
        let crf = lerp(cfg.crf, rng.random::<f64>()).round() as u32;
        let preset = cfg.presets[rng.random_range(0..cfg.presets.len())].clone();
        // Kept frames spread over the clip, the first (an I-frame) not always among them.
        let mut keep: Vec<usize> = (0..cfg.frames).collect();
        for i in (1..keep.len()).rev() {
            keep.swap(i, rng.random_range(0..=i));
        }
        keep.truncate(cfg.keep);
        keep.sort();
        clips.push(PoolClip {
            clean,
            noisy,
            crf,
            preset,
            keep,
        });
    }
    Ok(clips)
}

/// `frames` crops of side `s` panning across a still image at a constant random velocity
/// (whole pixels per frame, up to 4), bouncing at the borders.
fn pan(img: &Tensor, frames: usize, s: i64, rng: &mut StdRng) -> Vec<Tensor> {
    let (h, w) = (img.size()[1], img.size()[2]);
    let (mut y, mut x) = (rng.random_range(0..=h - s), rng.random_range(0..=w - s));
    let (mut vy, mut vx) = (rng.random_range(-4..=4i64), rng.random_range(-4..=4i64));
    (0..frames)
        .map(|_| {
            let crop = img.narrow(1, y, s).narrow(2, x, s);
            if y + vy < 0 || y + vy > h - s {
                vy = -vy;
            }
            if x + vx < 0 || x + vx > w - s {
                vx = -vx;
            }
            y = (y + vy).clamp(0, h - s);
            x = (x + vx).clamp(0, w - s);
            crop
        })
        .collect()
}

/// The pairs of a pool folder, u8 (3, H, W) each, for training crops.
pub struct PairPool {
    pairs: Vec<(Tensor, Tensor)>,
}

impl PairPool {
    /// Read every `*_noisy.png` with its `*_clean.png`.
    pub fn load(dir: &Path) -> Result<PairPool> {
        let mut pairs = Vec::new();
        for noisy in crate::research::imageio::list_images(dir)? {
            let name = noisy.file_name().map(|n| n.to_string_lossy().into_owned());
            let Some(stem) = name.as_deref().and_then(|n| n.strip_suffix("_noisy.png")) else {
                continue;
            };
            let clean = dir.join(format!("{stem}_clean.png"));
            let (n, c) = (
                crate::research::train_data::load_rgb8(&noisy)?,
                crate::research::train_data::load_rgb8(&clean)?,
            );
            if n.size() != c.size() {
                return Err(Error::format(&noisy, "its clean partner has another size"));
            }
            pairs.push((n, c));
        }
        if pairs.is_empty() {
            return Err(Error::Input(format!(
                "{}: no *_noisy.png / *_clean.png pairs",
                dir.display()
            )));
        }
        Ok(PairPool { pairs })
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// A random (noisy, clean) crop of side `patch` with one of the 8 flips/rotations, f32
    /// (1, 3, P, P) in [0, 1].
    pub fn crop(&self, rng: &mut StdRng, patch: i64) -> (Tensor, Tensor) {
        let (n, c) = &self.pairs[rng.random_range(0..self.pairs.len())];
        let (h, w) = (n.size()[1], n.size()[2]);
        let y = rng.random_range(0..=h - patch);
        let x = rng.random_range(0..=w - patch);
        let k = rng.random_range(0..8i64);
        let f = |t: &Tensor| {
            let mut t = t.narrow(1, y, patch).narrow(2, x, patch);
            if k >= 4 {
                t = t.flip([2]);
            }
            (t.rot90(k % 4, [1, 2]).to_kind(Kind::Float) / 255.0).unsqueeze(0)
        };
        (f(n), f(c))
    }
}

/// Where generation `g` of a pool is, given the pool's `dir`: the folder itself, with
/// `generation.txt` saying which generation it holds.
pub fn pool_generation(dir: &Path) -> Option<u64> {
    std::fs::read_to_string(dir.join("generation.txt"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PoolSection {
        PoolSection {
            dir: PathBuf::from("unused"),
            prob: 0.5,
            regen_steps: 100,
            video_dirs: vec![],
            sequence_clips: 1,
            still_clips: 1,
            frames: 4,
            keep: 2,
            size: 32,
            crf: default_crf(),
            presets: default_presets(),
            camera: IspNoise {
                jpeg_prob: 0.0,
                subsample_prob: 0.0,
                ..IspNoise::default()
            },
        }
    }

    fn image(h: i64, w: i64, seed: u64) -> Tensor {
        crate::research::noise::TorchRng::new(seed)
            .randint(256, &[3, h, w], Kind::Uint8)
            .unwrap()
    }

    #[test]
    fn clips_are_seeded_by_generation_and_sized() {
        let c = cfg();
        c.validate(32).unwrap();
        let seqs = vec![(0..6).map(|i| image(40, 48, i)).collect::<Vec<_>>()];
        let stills = vec![image(64, 64, 9)];
        let a = make_clips(&c, 1, 0, &seqs, &stills).unwrap();
        let b = make_clips(&c, 1, 0, &seqs, &stills).unwrap();
        let other = make_clips(&c, 1, 1, &seqs, &stills).unwrap();
        assert_eq!(a.len(), 2);
        for (x, y) in a.iter().zip(&b) {
            assert!(x.noisy.iter().zip(&y.noisy).all(|(p, q)| p.equal(q)));
            assert_eq!((x.crf, &x.preset, &x.keep), (y.crf, &y.preset, &y.keep));
            assert_eq!(x.noisy.len(), 4);
            assert_eq!(x.keep.len(), 2);
            assert_eq!(x.noisy[0].size(), vec![3, 32, 32]);
            assert!((16..=34).contains(&x.crf));
        }
        assert!(!a[0].noisy[0].equal(&other[0].noisy[0]));
    }

    #[test]
    fn a_pan_moves_and_stays_inside() {
        let img = image(40, 40, 3);
        let mut rng = StdRng::seed_from_u64(5);
        let frames = pan(&img, 50, 32, &mut rng);
        assert_eq!(frames.len(), 50);
        assert!(frames.iter().all(|f| f.size() == vec![3, 32, 32]));
    }

    #[test]
    fn bad_pool_settings_are_refused() {
        let mut c = cfg();
        c.size = 30;
        assert!(c.validate(32).is_err());
        let mut c = cfg();
        c.crf = [10.0, 60.0];
        assert!(c.validate(32).unwrap_err().to_string().contains("crf"));
        let mut c = cfg();
        c.keep = 9;
        assert!(c.validate(32).is_err());
    }

    #[test]
    fn the_pool_reads_pairs_and_crops_them_alike() {
        let dir = tempfile::tempdir().unwrap();
        let n = image(40, 40, 1);
        let c = n.shallow_clone();
        for (name, t) in [("00000_noisy.png", &n), ("00000_clean.png", &c)] {
            let x = t.to_kind(Kind::Float).unsqueeze(0) / 255.0;
            crate::research::imageio::save(
                &dir.path().join(name),
                &x,
                crate::research::imageio::BitDepth::U8,
            )
            .unwrap();
        }
        let pool = PairPool::load(dir.path()).unwrap();
        assert_eq!(pool.len(), 1);
        let (a, b) = pool.crop(&mut StdRng::seed_from_u64(2), 32);
        assert_eq!(a.size(), vec![1, 3, 32, 32]);
        assert!(a.equal(&b));
        assert!(PairPool::load(&dir.path().join("missing")).is_err());
    }
}
