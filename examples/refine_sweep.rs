//! Sweep the refinement's parameters (issue 23, `--refine wiener:...`) on validation sets
//! without rerunning the network: each image's network output (the pilot, refinement off) is
//! computed once and cached as a tensor file under CACHE, then every SPEC refines it. Scores
//! as `clipdenoise eval` does: real pairs rounded to 8 bits, synthetic noise not rounded;
//! mean PSNR and the mean shift of the output against its input (levels of 255, per channel).
//!
//! Usage: cargo run --release --example refine_sweep -- MODEL CACHE SET... -- SPEC...
//!   MODEL: a weights file or `default`; SET: `pairs:DIR`, `clean:DIR` (clean images in, the
//!   shift out) or `gaussian:SIGMA:DIR`; SPEC: `off`, `lowpass:SIGMA` (keep_input_lowpass) or
//!   any `--refine` value.
use std::path::{Path, PathBuf};

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::lowpass::keep_input_lowpass;
use clipdenoise::refine::Refine;
use clipdenoise::research::eval::{image_seed, list_pairs, noisy_input, reference_255};
use clipdenoise::research::imageio;
use clipdenoise::research::metrics::psnr;
use clipdenoise::research::noise::NoiseSpec;
use clipdenoise::weights::ModelSource;
use tch::{Device, Kind, Tensor};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One image: (input 0..1 f32, reference 0..255 f64, round the output to 8 bits).
struct Case {
    input: Tensor,
    reference: Tensor,
    round: bool,
    pilot: Tensor,
}

fn cases(set: &str, model: &Denoiser, cache: &Path) -> Res<Vec<Case>> {
    let (kind, rest) = set
        .split_once(':')
        .ok_or("SET: pairs:DIR, clean:DIR or gaussian:S:DIR")?;
    let mut inputs: Vec<(String, Tensor, Tensor, bool)> = Vec::new();
    match kind {
        "pairs" => {
            for (noisy, clean) in list_pairs(Path::new(rest), None)? {
                let n = imageio::read(&noisy)?;
                let c = imageio::read(&clean.ok_or("no clean partner")?)?;
                let name = noisy.file_name().unwrap().to_string_lossy().into_owned();
                inputs.push((name, n.to_tensor(Kind::Float)?, reference_255(&c)?, true));
            }
        }
        "clean" => {
            for f in imageio::list_images(Path::new(rest))? {
                let c = imageio::read(&f)?;
                let name = f.file_name().unwrap().to_string_lossy().into_owned();
                inputs.push((name, c.to_tensor(Kind::Float)?, reference_255(&c)?, false));
            }
        }
        "gaussian" => {
            let (sigma, dir) = rest.split_once(':').ok_or("gaussian:SIGMA:DIR")?;
            let spec: NoiseSpec = NoiseSpec::parse_list(&format!("gaussian:{sigma}"))?.remove(0);
            for (i, f) in imageio::list_images(Path::new(dir))?.iter().enumerate() {
                let c = imageio::read(f)?;
                let x = c.to_tensor(Kind::Float)?;
                let noisy = noisy_input(&x, &spec, image_seed(0, &spec, i))?;
                let name = format!("g{sigma}-{}", f.file_name().unwrap().to_string_lossy());
                inputs.push((name, noisy, reference_255(&c)?, false));
            }
        }
        _ => return Err(format!("unknown set kind '{kind}'").into()),
    }
    let dir = cache.join(set.replace(['/', ':'], "_"));
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (name, input, reference, round) in inputs {
        let file = dir.join(format!("{name}.pt"));
        let pilot = match file.exists() {
            true => Tensor::load(&file)?,
            false => {
                let p = model.denoise(&input)?.to_device(Device::Cpu);
                p.save(&file)?;
                p
            }
        };
        out.push(Case {
            input,
            reference,
            round,
            pilot,
        });
    }
    Ok(out)
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let split = args
        .iter()
        .position(|a| a == "--")
        .ok_or("expected -- before the specs")?;
    let (head, specs) = (&args[..split], &args[split + 1..]);
    let [model, cache, sets @ ..] = head else {
        return Err("usage: MODEL CACHE SET... -- SPEC...".into());
    };
    let loaded = ModelSource::parse(model).load(Device::Cpu)?;
    let den = Denoiser::new(loaded, Options::default())?;
    let cache = PathBuf::from(cache);
    print!("{:<70}", "spec");
    for s in sets {
        print!(" | {:>24}", s.rsplit('/').next().unwrap_or(s));
    }
    println!();
    let all: Vec<Vec<Case>> = sets
        .iter()
        .map(|s| cases(s, &den, &cache))
        .collect::<Res<_>>()?;
    for spec in specs {
        print!("{spec:<70}");
        for set in &all {
            let (mut p, mut shift) = (0.0, [0.0f64; 3]);
            for c in set {
                let y = match spec.strip_prefix("lowpass:") {
                    Some(s) => keep_input_lowpass(&c.pilot, &c.input, s.parse()?)?,
                    None => spec.parse::<Refine>()?.apply(&c.input, &c.pilot)?,
                }
                .clamp(0.0, 1.0)
                .to_kind(Kind::Double)
                    * 255.0;
                let y = if c.round { y.round() } else { y };
                p += psnr(&y, &c.reference)?;
                let d = (&y - c.input.to_kind(Kind::Double) * 255.0).mean_dim(
                    [0i64, 2, 3].as_slice(),
                    false,
                    Kind::Double,
                );
                for (k, v) in Vec::<f64>::try_from(d)?.iter().enumerate() {
                    shift[k] += v;
                }
            }
            let n = set.len() as f64;
            print!(
                " | {:>6.2} {:+.2}/{:+.2}/{:+.2}",
                p / n,
                shift[0] / n,
                shift[1] / n,
                shift[2] / n
            );
        }
        println!();
    }
    Ok(())
}
