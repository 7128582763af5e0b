//! Sweep the refinement's parameters (issue 23, `--refine wiener:...`) on validation sets
//! without rerunning the network: each image's network output (the pilot, refinement off) is
//! computed once and cached as a tensor file under CACHE, then every SPEC refines it. Scores
//! as `clipdenoise eval` does: real pairs rounded to 8 bits, synthetic noise not rounded;
//! mean PSNR and the mean shift of the output against its input (levels of 255, per channel).
//!
//! Usage: cargo run --release --example refine_sweep -- MODEL CACHE SET... -- SPEC...
//!   MODEL: a weights file or `default`; SET: `pairs:DIR`, `clean:DIR` (clean images in, the
//!   shift out), `gaussian:SIGMA:DIR` or `isp:CONFIG:N:DIR` (the first N images of DIR, their
//!   centre 256x256, through the camera-and-codec noise of CONFIG's `[noise.isp]`, one camera
//!   per image seeded by its index, the camera's noise-free development as reference: the
//!   training side's noise, for choosing parameters off the validation sets); SPEC: `off`,
//!   `lowpass:SIGMA` (keep_input_lowpass), any `--refine` value, or `cue` (the noise cue of
//!   `--refine wiener:adapt=...` against the true noise, std of noisy - reference, RMS over
//!   R/G/B: mean estimated / mean true levels and the mean |relative error| in %; `cue-list`
//!   prints it per image with the pilot's PSNR).
use std::path::{Path, PathBuf};

use clipdenoise::inference::{Denoiser, Options};
use clipdenoise::lowpass::keep_input_lowpass;
use clipdenoise::refine::{Refine, Wiener};
use clipdenoise::research::eval::{image_seed, list_pairs, noisy_input, reference_255};
use clipdenoise::research::imageio;
use clipdenoise::research::metrics::psnr;
use clipdenoise::research::noise::NoiseSpec;
use clipdenoise::research::train_config::TrainConfig;
use clipdenoise::weights::ModelSource;
use rand::SeedableRng;
use tch::{Device, Kind, Tensor};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// One image: (input 0..1 f32, reference 0..255 f64, round the output to 8 bits).
struct Case {
    name: String,
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
        "isp" => {
            let mut it = rest.splitn(3, ':');
            let (Some(config), Some(n), Some(dir)) = (it.next(), it.next(), it.next()) else {
                return Err("isp:CONFIG:N:DIR".into());
            };
            let mut isp = TrainConfig::from_file(Path::new(config))?.noise.isp;
            isp.unbiased_draws = 0;
            for (i, f) in imageio::list_images(Path::new(dir))?
                .iter()
                .take(n.parse()?)
                .enumerate()
            {
                let c = imageio::read(f)?.to_tensor(Kind::Float)?;
                let (h, w) = (c.size()[2], c.size()[3]);
                let s = 256.min(h / 2 * 2).min(w / 2 * 2);
                let crop = c.narrow(2, (h - s) / 2, s).narrow(3, (w - s) / 2, s);
                let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
                let (noisy, target) = isp.apply(&crop, &mut rng)?;
                let name = format!("isp{i}-{}", f.file_name().unwrap().to_string_lossy());
                let reference = (target.to_kind(Kind::Double) * 255.0).round();
                inputs.push((name, noisy, reference, true));
            }
        }
        _ => return Err(format!("unknown set kind '{kind}'").into()),
    }
    let dir = cache.join(set.replace(['/', ':'], "_"));
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::new();
    for (name, input, reference, round) in inputs {
        let file = dir.join(format!("{name}.pt"));
        let name = name.clone();
        let pilot = match file.exists() {
            true => Tensor::load(&file)?,
            false => {
                let p = model.denoise(&input)?.to_device(Device::Cpu);
                p.save(&file)?;
                p
            }
        };
        out.push(Case {
            name,
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
        if spec == "cue" || spec == "cue-list" {
            cue(spec == "cue-list", &all)?;
            continue;
        }
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

/// The noise cue against the true noise of every set (see the module's doc).
fn cue(list: bool, all: &[Vec<Case>]) -> Res<()> {
    print!("{:<70}", "cue: estimated / true levels, mean |error| %");
    let mut lines = Vec::new();
    for set in all {
        let (mut est, mut truth, mut err) = (0.0, 0.0, 0.0);
        for c in set {
            let e = Wiener::default().noise_cue(&c.input, &c.pilot)?[0];
            let d = c.input.to_kind(Kind::Double) * 255.0 - &c.reference;
            let t = d.square().mean(Kind::Double).double_value(&[]).sqrt();
            let p = psnr(
                &(c.pilot.clamp(0.0, 1.0).to_kind(Kind::Double) * 255.0).round(),
                &c.reference,
            )?;
            lines.push(format!(
                "  {:<60} cue {e:6.2} true {t:6.2} pilot {p:6.2} dB",
                c.name
            ));
            est += e;
            truth += t;
            err += (e / t - 1.0).abs();
        }
        let n = set.len() as f64;
        print!(
            " | {:>6.2} / {:>5.2} {:>5.1} %",
            est / n,
            truth / n,
            100.0 * err / n
        );
    }
    println!();
    if list {
        for l in lines {
            println!("{l}");
        }
    }
    Ok(())
}
