//! Where a model's brightness shift can come from (issue 23, item 4): the mean of noisy -
//! target per RGB channel (0..255 levels) of each noise type of a training config, alone, on
//! random crops of clean images; a model trained with L1 learns to undo any such bias, so it
//! moves clean pictures by about minus it. Also splits each type's bias by the target's
//! brightness (dark < 0.25 <= mid < 0.75 <= bright).
//! Usage: cargo run --release --example noise_bias -- CONFIG.toml IMAGE_DIR [CROPS]
use clipdenoise::research::train_data::random_crop;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::Kind;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = clipdenoise::research::train::TrainConfig::from_file(std::path::Path::new(&args[1]))?;
    let files = clipdenoise::research::imageio::list_images(std::path::Path::new(&args[2]))?;
    let crops: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let p = cfg.data.patch;
    let names = [
        "gaussian",
        "correlated",
        "poisson",
        "camera",
        "isp (camera and codec)",
    ];
    for (which, name) in names.iter().enumerate().take(cfg.noise.weights.len()) {
        let mut mix = cfg.noise.clone();
        for (i, w) in mix.weights.iter_mut().enumerate() {
            *w = if i == which { 1.0 } else { 0.0 };
        }
        let mut rng = StdRng::seed_from_u64(7);
        let mut noise_rng = clipdenoise::research::noise::TorchRng::new(7);
        let mut sum = [0f64; 3];
        let mut bands = [[0f64; 2]; 3];
        for k in 0..crops {
            let img = clipdenoise::research::train::load_rgb8(&files[k % files.len()])?;
            let clean = random_crop(&img, p, &mut rng);
            let (noisy, target) = mix.apply(&clean, &mut rng, &mut noise_rng)?;
            let d = (&noisy - &target) * 255.0;
            for (c, s) in sum.iter_mut().enumerate() {
                *s += d.select(1, c as i64).mean(Kind::Double).double_value(&[]) / crops as f64;
            }
            let luma = target.mean_dim(1, false, Kind::Float);
            let dm = d.mean_dim(1, false, Kind::Float);
            for (b, (lo, hi)) in [(0.0, 0.25), (0.25, 0.75), (0.75, 1.01)].iter().enumerate() {
                let m = luma.ge(*lo).logical_and(&luma.lt(*hi));
                let n = m.sum(Kind::Double).double_value(&[]);
                bands[b][0] += dm.masked_select(&m).sum(Kind::Double).double_value(&[]);
                bands[b][1] += n;
            }
        }
        let band = |b: usize| bands[b][0] / bands[b][1].max(1.0);
        println!(
            "{name:<24} mean(noisy - target) R/G/B {:+.2}/{:+.2}/{:+.2}; by brightness dark {:+.2} mid {:+.2} bright {:+.2}",
            sum[0], sum[1], sum[2], band(0), band(1), band(2)
        );
    }
    Ok(())
}
