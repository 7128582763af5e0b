//! The compressed-video evaluation's arithmetic (the GStreamer side is `clipdenoise eval
//! --video`): camera noise for whole clips, seeded, and the scores of a denoised clip against
//! its clean frames.
//!
//! Frames are RGB u8 tensors (3, H, W). A clip is filmed by one camera drawn from
//! [`video_camera`] (seeded by the clip), each frame with its own noise (seeded by the clip
//! and the frame index), so a rerun gives the same frames bit for bit.
//!
//! Scores, on the 0..255 scale in float64, as means over the frames: PSNR on RGB, PSNR on
//! BT.601 luma (Y = 0.299 R + 0.587 G + 0.114 B of the RGB frames), MATLAB-style SSIM (RGB,
//! [`crate::research::metrics::ssim`]), and the temporal-stability error: the mean absolute difference
//! between the frame-to-frame changes of the clip and those of the clean clip,
//! mean_t mean |(f_t - f_{t-1}) - (c_t - c_{t-1})| (0 for a perfect clip; flicker and crawling
//! noise raise it).

use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::frame::ColorMatrix;
use crate::research::isp_noise::{Camera, IspNoise};
use crate::research::metrics;

/// The camera of the evaluation: a phone-like pipeline with a fixed shot-noise level `shot`
/// (read noise from Brooks et al.'s fit), tone curve, random white balance and colour matrix
/// (per clip), chroma noise reduction; no sharpening, rescaling, chroma subsampling or JPEG
/// (the H.264 encoder that follows subsamples and compresses).
pub fn video_camera(shot: f64) -> IspNoise {
    IspNoise {
        shot: [shot, shot],
        read_spread: 0.0,
        gamma: [2.2, 2.2],
        tone_prob: 1.0,
        luma_nr_prob: 0.0,
        chroma_nr_prob: 1.0,
        chroma_nr_sigma: [2.0, 2.0],
        sharpen_prob: 0.0,
        downscale_prob: 0.0,
        subsample_prob: 0.0,
        jpeg_prob: 0.0,
        ..IspNoise::default()
    }
}

/// FNV-1a 64 of `text`: stable seeds from names.
pub fn seed_of(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The noisy clip: `frames` (u8 (3, H, W), H and W even) filmed by one camera of `camera`
/// drawn from `seed`, frame i's noise from `seed_of("{seed}/{i}")`. Returns u8 frames.
pub fn noisy_clip(frames: &[Tensor], camera: &IspNoise, seed: u64) -> Result<Vec<Tensor>> {
    camera.validate()?;
    let cam = Camera::draw(camera, &mut StdRng::seed_from_u64(seed));
    frames
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let x = f.f_to_kind(Kind::Float)?.f_unsqueeze(0)? / 255.0;
            let mut rng = StdRng::seed_from_u64(seed_of(&format!("{seed}/{i}")));
            let (noisy, _) = cam.capture(&x, &mut rng)?;
            Ok((noisy * 255.0)
                .f_round()?
                .f_clamp(0.0, 255.0)?
                .f_to_kind(Kind::Uint8)?
                .f_squeeze_dim(0)?)
        })
        .collect()
}

/// Means over the frames of a clip.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct VideoScore {
    pub psnr: f64,
    pub psnr_y: f64,
    pub ssim: f64,
    /// Temporal-stability error (0..255 scale, lower is better).
    pub temporal: f64,
    pub frames: usize,
}

/// BT.601 luma of RGB (3, H, W) on the same scale, as (1, H, W) f64.
fn luma(x: &Tensor) -> Result<Tensor> {
    let (kr, kb) = ColorMatrix::Bt601.kr_kb();
    let w = Tensor::from_slice(&[kr, 1.0 - kr - kb, kb]).view([3, 1, 1]);
    Ok(x.f_to_kind(Kind::Double)?
        .f_mul(&w)?
        .f_sum_dim_intlist(0, true, Kind::Double)?)
}

/// Score `frames` against `clean` (both u8 or float (3, H, W) on the 0..255 scale).
pub fn score_clip(clean: &[Tensor], frames: &[Tensor]) -> Result<VideoScore> {
    if clean.len() != frames.len() || clean.is_empty() {
        return Err(Error::Input(format!(
            "{} frames to score against {} clean frames",
            frames.len(),
            clean.len()
        )));
    }
    let n = clean.len() as f64;
    let (mut psnr, mut psnr_y, mut ssim, mut temporal) = (0.0, 0.0, 0.0, 0.0);
    for (i, (c, f)) in clean.iter().zip(frames).enumerate() {
        if c.size() != f.size() {
            return Err(Error::Input(format!(
                "frame {i} is {:?} but its clean frame {:?}",
                f.size(),
                c.size()
            )));
        }
        let (cd, fd) = (c.f_to_kind(Kind::Double)?, f.f_to_kind(Kind::Double)?);
        psnr += metrics::psnr(&fd, &cd)?;
        psnr_y += metrics::psnr(&luma(&fd)?, &luma(&cd)?)?;
        ssim += metrics::ssim(&fd, &cd)?;
        if i > 0 {
            let dc = &cd - clean[i - 1].f_to_kind(Kind::Double)?;
            let df = &fd - frames[i - 1].f_to_kind(Kind::Double)?;
            temporal += (df - dc).f_abs()?.f_mean(Kind::Double)?.double_value(&[]);
        }
    }
    Ok(VideoScore {
        psnr: psnr / n,
        psnr_y: psnr_y / n,
        ssim: ssim / n,
        temporal: temporal / (n - 1.0).max(1.0),
        frames: clean.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn clip(n: i64) -> Vec<Tensor> {
        (0..n)
            .map(|i| {
                let ramp = Tensor::arange(32, (Kind::Float, Device::Cpu)).view([1, 1, 32]) * 6.0;
                (ramp + 10.0 * i as f64 + Tensor::zeros([3, 24, 1], (Kind::Float, Device::Cpu)))
                    .clamp(0.0, 255.0)
                    .to_kind(Kind::Uint8)
            })
            .collect()
    }

    #[test]
    fn a_perfect_clip_scores_infinite_psnr_and_zero_temporal_error() {
        let c = clip(4);
        let s = score_clip(&c, &c).unwrap();
        assert!(s.psnr.is_infinite() && s.psnr_y.is_infinite());
        assert!((s.ssim - 1.0).abs() < 1e-9);
        assert_eq!(s.temporal, 0.0);
        assert_eq!(s.frames, 4);
    }

    #[test]
    fn a_constant_offset_costs_psnr_but_not_temporal_stability_and_flicker_does() {
        let c = clip(4);
        let offset: Vec<Tensor> = c.iter().map(|f| f.to_kind(Kind::Double) + 4.0).collect();
        let s = score_clip(&c, &offset).unwrap();
        assert!((s.psnr - 10.0 * (255.0f64 * 255.0 / 16.0).log10()).abs() < 1e-9);
        assert!(s.temporal.abs() < 1e-12);
        let flicker: Vec<Tensor> = c
            .iter()
            .enumerate()
            .map(|(i, f)| f.to_kind(Kind::Double) + if i % 2 == 0 { 4.0 } else { 0.0 })
            .collect();
        assert!((score_clip(&c, &flicker).unwrap().temporal - 4.0).abs() < 1e-9);
        assert!(score_clip(&c, &c[..3]).is_err());
    }

    #[test]
    fn noisy_clips_are_seeded_and_each_frame_has_its_own_noise() {
        let c = clip(3);
        let cam = video_camera(0.005);
        let a = noisy_clip(&c, &cam, 7).unwrap();
        let b = noisy_clip(&c, &cam, 7).unwrap();
        assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
        let other = noisy_clip(&c, &cam, 8).unwrap();
        assert!(!a[0].equal(&other[0]));
        // Same scene in frames 0 and 1 up to a shift of 10: their noise differs.
        let n0 = a[0].to_kind(Kind::Double) - c[0].to_kind(Kind::Double);
        let n1 = a[1].to_kind(Kind::Double) - c[1].to_kind(Kind::Double);
        assert!(!n0.equal(&n1));
        let s = score_clip(&c, &a).unwrap();
        assert!(s.psnr > 20.0 && s.psnr < 45.0, "noisy psnr {}", s.psnr);
    }

    #[test]
    fn the_unbiased_reference_has_the_noisy_clips_mean_and_the_clean_one_does_not() {
        let c: Vec<Tensor> = clip(6)
            .iter()
            .map(|f| (f.to_kind(Kind::Float) * 0.8 + 20.0).to_kind(Kind::Uint8))
            .collect();
        let noisy = noisy_clip(&c, &video_camera(0.01), 3).unwrap();
        let reference = crate::research::unbias::unbiased_frames(&c, &noisy).unwrap();
        let gap = |r: &[Tensor]| {
            let d: Vec<Tensor> = r
                .iter()
                .zip(&noisy)
                .map(|(r, n)| n.to_kind(Kind::Double) - r.to_kind(Kind::Double))
                .collect();
            Tensor::stack(&d, 0)
                .mean_dim(&[0i64, 2, 3][..], false, Kind::Double)
                .abs()
                .max()
                .double_value(&[])
        };
        let clean_gap = gap(&c);
        assert!(
            clean_gap > 0.5,
            "the camera's bias against the clean frames {clean_gap}"
        );
        let unbiased_gap = gap(&reference);
        assert!(
            unbiased_gap < 0.05,
            "against the unbiased reference {unbiased_gap}"
        );
        assert_eq!(reference[0].size(), c[0].size());
    }
}
