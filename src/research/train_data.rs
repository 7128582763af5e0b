//! The clean side of training: images held in memory, random crops with flips and rotations,
//! and the colour augmentation of the crops.

use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::RngExt;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::frame::ColorMatrix;
use crate::research::camera_ops::lerp;
use crate::research::train_config::DataSection;

/// Clean training images held in memory as u8 (3, H, W), sampled in proportion to their area.
pub(crate) struct Dataset {
    pub(crate) images: Vec<Tensor>,
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
    pub(crate) fn new(paths: &[PathBuf], min_side: i64) -> Result<Self> {
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
    pub(crate) fn batch(&self, rng: &mut StdRng, batch: i64, patch: i64) -> Tensor {
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

/// A random crop of side `patch` of an RGB u8 (3, H, W) image as f32 (1, 3, P, P) in [0, 1],
/// as it is (no flip or rotation): to look at the training noise on pictures (examples
/// noise_bias and noise_samples). Draws the row, then the column.
pub fn random_crop(img: &Tensor, patch: i64, rng: &mut StdRng) -> Tensor {
    let (h, w) = (img.size()[1], img.size()[2]);
    let (y, x) = (
        rng.random_range(0..=h - patch),
        rng.random_range(0..=w - patch),
    );
    img.narrow(1, y, patch)
        .narrow(2, x, patch)
        .to_kind(Kind::Float)
        .unsqueeze(0)
        / 255.0
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
pub(crate) fn color_augment(x: &Tensor, d: &DataSection, rng: &mut StdRng) -> Tensor {
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
            let s = lerp(d.saturation, rng.random::<f64>());
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

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

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
