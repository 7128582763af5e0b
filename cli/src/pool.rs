//! The codec pool of `clipdenoise train`: the clips `clipdenoise::research::train_pool` makes go through
//! real x264 round trips (GStreamer) and are written as PNG pairs, one generation at a time.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clipdenoise::research::imageio::{self, BitDepth};
use clipdenoise::research::train::{load_rgb8, Trainer};
use clipdenoise::research::train_pool::{self, PairPool, PoolSection};
use clipdenoise::research::unbias::unbiased_frames;
use tch::{Kind, Tensor};

use crate::gst_frames;

/// Make sure the trainer holds the pool generation its next step trains on: reuse the folder
/// when it holds that generation, else make it (a few seconds per clip on 2 cores).
pub fn ensure(trainer: &mut Trainer) -> anyhow::Result<()> {
    let Some(cfg) = trainer.cfg.pool.clone() else {
        return Ok(());
    };
    let g = cfg.generation(trainer.step());
    if trainer.pool_generation() == Some(g) {
        return Ok(());
    }
    if train_pool::pool_generation(&cfg.dir) != Some(g) {
        eprintln!("codec pool: making generation {g} in {}", cfg.dir.display());
        let start = std::time::Instant::now();
        generate(&cfg, trainer.cfg.run.seed, g, trainer.clean_images())?;
        eprintln!(
            "codec pool: generation {g} took {:.0} s",
            start.elapsed().as_secs_f64()
        );
    }
    let pool = PairPool::load(&cfg.dir)?;
    trainer.set_pool(g, pool);
    Ok(())
}

/// Frame sequences: every subfolder of `dirs` with its images sorted by name.
fn sequences(dirs: &[PathBuf], min_side: i64) -> anyhow::Result<Vec<Vec<Tensor>>> {
    let mut out = Vec::new();
    for dir in dirs {
        let mut subs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot list {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        subs.sort();
        for sub in subs {
            let frames = clipdenoise::research::imageio::list_images(&sub)?
                .iter()
                .map(|p| load_rgb8(p))
                .collect::<Result<Vec<_>, _>>()?;
            if frames.len() >= 2
                && frames[0].size()[1] >= min_side
                && frames[0].size()[2] >= min_side
            {
                out.push(frames);
            }
        }
    }
    Ok(out)
}

fn generate(cfg: &PoolSection, seed: u64, g: u64, stills: &[Tensor]) -> anyhow::Result<()> {
    crate::video::init_gstreamer()?;
    let seqs = sequences(&cfg.video_dirs, cfg.size)?;
    let stills: Vec<Tensor> = stills
        .iter()
        .filter(|t| t.size()[1] >= cfg.size && t.size()[2] >= cfg.size)
        .map(|t| t.shallow_clone())
        .collect();
    let clips = train_pool::make_clips(cfg, seed, g, &seqs, &stills)?;
    let part = cfg.dir.with_extension("part");
    let _ = std::fs::remove_dir_all(&part);
    std::fs::create_dir_all(&part).with_context(|| format!("cannot create {}", part.display()))?;
    let mut n = 0usize;
    for clip in &clips {
        let decoded = round_trip(&clip.noisy, clip.crf, &clip.preset)?;
        // Mean-preserving targets (issue 23): the clip's decoded frames measure the bias of
        // its camera and x264 per brightness (the colour conversions are exact since the
        // round trip stopped using videoconvert; uncorrected, generation 0 of
        // configs/unbiased-tiny.toml's pool is still +2.7 levels in the shadows and -3.1 to
        // -3.7 in the highlights: the camera's clipping and curves, weights/README.md).
        let clean = if cfg.camera.unbiased_draws > 0 {
            unbiased_frames(&clip.clean, &decoded)?
        } else {
            clip.clean.iter().map(|t| t.shallow_clone()).collect()
        };
        for &k in &clip.keep {
            save(&part.join(format!("{n:05}_noisy.png")), &decoded[k])?;
            save(&part.join(format!("{n:05}_clean.png")), &clean[k])?;
            n += 1;
        }
    }
    std::fs::write(part.join("generation.txt"), format!("{g}\n"))?;
    let _ = std::fs::remove_dir_all(&cfg.dir);
    std::fs::rename(&part, &cfg.dir)
        .with_context(|| format!("cannot move the pool to {}", cfg.dir.display()))?;
    Ok(())
}

fn save(path: &Path, frame: &Tensor) -> anyhow::Result<()> {
    let x = frame.to_kind(Kind::Float).unsqueeze(0) / 255.0;
    Ok(imageio::save(path, &x, BitDepth::U8)?)
}

/// RGB frames -> I420 (the library's converter, padded to whole macroblocks) -> x264 (CRF
/// `crf`, `preset`; `bitrate` at its maximum because x264enc's pass=qual caps the rate at
/// `bitrate` through the VBV, 2 Mbit/s by default) -> avdec_h264 -> cropped back -> RGB (the
/// library's converter with the decoded caps' colorimetry, not `videoconvert`: issue 23).
fn round_trip(frames: &[Tensor], crf: u32, preset: &str) -> anyhow::Result<Vec<Tensor>> {
    let (h, w) = (frames[0].size()[1], frames[0].size()[2]);
    let (ph, pw) = gst_frames::macroblock_padded(&frames[0]);
    let (i420, caps) = gst_frames::i420_buffers(frames, 30)?;
    let desc = format!(
        "appsrc name=src format=time max-bytes=0 ! \
         x264enc pass=qual quantizer={crf} bitrate=2048000 speed-preset={preset} key-int-max=60 threads=1 ! \
         h264parse ! avdec_h264 ! videocrop right={} bottom={} ! videoconvert ! {} ! \
         appsink name=sink sync=false",
        pw - w,
        ph - h,
        gst_frames::DECODED
    );
    gst_frames::run_buffers(&desc, i420, &caps, "x264 round trip")?
        .iter()
        .map(gst_frames::sample_to_tensor)
        .collect()
}
