//! Look at the training noise: writes a PNG grid of (target | noisy) pairs of a training
//! config's noise mix on crops of one clean image, and prints each pair's noise statistics
//! (luma and chroma std on the 0..255 scale).
//! Usage: cargo run --release --example noise_samples -- CONFIG.toml IMAGE OUT.png [N]
use clipdenoise::research::train_data::random_crop;
use rand::rngs::StdRng;
use rand::SeedableRng;
use tch::{Kind, Tensor};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = clipdenoise::research::train::TrainConfig::from_file(std::path::Path::new(&args[1]))?;
    let img = clipdenoise::research::train::load_rgb8(std::path::Path::new(&args[2]))?;
    let n: usize = args.get(4).map_or(Ok(8), |s| s.parse())?;
    let p = cfg.data.patch;
    let mut rng = StdRng::seed_from_u64(1);
    let mut noise_rng = clipdenoise::research::noise::TorchRng::new(1);
    let mut rows = Vec::new();
    for _ in 0..n {
        let clean = random_crop(&img, p, &mut rng);
        let (noisy, target) = cfg.noise.apply(&clean, &mut rng, &mut noise_rng)?;
        let d = (&noisy - &target) * 255.0;
        let wy = Tensor::from_slice(&[0.299f32, 0.587, 0.114]).view([1, 3, 1, 1]);
        let ny = (&d * &wy).sum_dim_intlist(1, true, Kind::Float);
        let chroma = &d - &ny;
        println!(
            "luma std {:.2}  chroma std {:.2}",
            ny.std(true).double_value(&[]),
            chroma.std(true).double_value(&[])
        );
        rows.push(Tensor::cat(&[target, noisy], 3));
    }
    let grid = Tensor::cat(&rows, 2);
    clipdenoise::research::imageio::save(
        std::path::Path::new(&args[3]),
        &grid,
        clipdenoise::research::imageio::BitDepth::U8,
    )?;
    Ok(())
}
