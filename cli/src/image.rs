//! `clipdenoise image`: denoise still images (PNG 8/16-bit, JPEG, TIFF), keeping the bit depth
//! where the output format allows. A 16-bit image runs through the model at full precision
//! (samples / 65535 in f32), never through an 8-bit copy.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clipdenoise::inference::{Denoiser, Options, Precision};
use clipdenoise::research::imageio::{self, Format, RgbImage};
use tch::Kind;

use crate::image_meta;
use crate::models::{ModelArgs, RefineArgs};
use crate::paths;

#[derive(clap::Args)]
#[command(
    group(clap::ArgGroup::new("out").required(true).args(["output", "out_dir"])),
    after_help = "Examples:\n  \
    clipdenoise image noisy.png -o clean.png\n  \
    clipdenoise image raw16.tif -o clean16.tif --device cuda\n  \
    clipdenoise image shots/*.jpg --out-dir cleaned/ --strength 0.8\n  \
    clipdenoise image photos/ --out-dir cleaned/ --model my-model.safetensors\n\n\
    PNG and TIFF keep 8 or 16 bits per sample (float TIFF stays float); JPEG is 8-bit. \
    Grayscale stays grayscale and the alpha channel is kept as it is (JPEG has no alpha). \
    A photo with an EXIF orientation (portrait phone photos) comes out upright, as viewers show it; \
    EXIF data and ICC profiles are not copied (the summary line says so when the input has them). \
    The output format follows the output's extension."
)]
pub struct Args {
    /// Image files (PNG, JPEG, TIFF), or directories whose images are all denoised
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Output file (one INPUT only); its extension picks the format; missing directories are created
    #[arg(short, long, value_name = "OUTPUT")]
    output: Option<PathBuf>,
    /// Write each result into DIR under its input's file name (created if missing)
    #[arg(long, value_name = "DIR")]
    out_dir: Option<PathBuf>,
    /// Overwrite existing output files
    #[arg(long, short)]
    force: bool,
    /// JPEG quality of JPEG outputs
    #[arg(long, default_value_t = 95, value_parser = clap::value_parser!(u8).range(1..=100))]
    quality: u8,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    refine: RefineArgs,
    /// Images with more pixels than this run as overlapping tiles, which bounds memory (0:
    /// never). Peak memory, default model on the CPU: at most about 0.45 GB per million pixels
    /// of this budget + 22 bytes per image pixel + 1.15 GB (a 6000x4000 JPEG: 3.3 GB at the
    /// default, 1.8 GB at 1000000; measured by benchmarks/image-memory.sh)
    #[arg(long, default_value_t = 4_000_000, help_heading = "Model")]
    max_pixels: i64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let jobs = plan(&args)?;
    let (_, device) = args.model.device()?;
    let source = args.model.source()?;
    let loaded = source
        .load(device)
        .with_context(|| format!("cannot load model {source}"))?;
    let opts = Options {
        device,
        precision: args.model.precision,
        max_pixels: args.max_pixels.max(0),
        coarse_grain: args.model.coarse_grain,
        refine: args.refine.refine,
        ..Options::default()
    };
    let mut denoiser = match opts.precision {
        // `auto`: a second copy, timed against the first on the first image's size.
        Precision::Auto if !device.is_cuda() => {
            Denoiser::new_auto(loaded, source.load(device)?, opts)?
        }
        _ => Denoiser::new(loaded, opts)?,
    };
    for (input, output) in &jobs {
        let t0 = Instant::now();
        let img = imageio::read(input)?;
        let (h, w) = (img.height as i64, img.width as i64);
        if let Some(choice) = denoiser.resolve_auto(w, h)? {
            eprintln!("precision {choice}");
        }
        // The model sees RGB; grayscale and alpha are put back as they were.
        let extras = imageio::read_extras(input)?;
        let depth_in = img.depth();
        let fmt = Format::from_path(output).expect("checked in plan");
        let depth_out = fmt.fit_depth(depth_in);
        let x = img.to_tensor(Kind::Float)?;
        // Large images: neither the input samples nor full-size tensors are held longer than
        // needed (the bound on memory that --max-pixels gives is for the model's tiles).
        drop(img);
        let y = denoise_image(&denoiser, x, args.model.strength)
            .with_context(|| format!("{}: denoising failed", input.display()))?;
        let out = RgbImage::from_tensor(&y, depth_out)?;
        drop(y);
        // Upright as viewers show the input (the written file carries no orientation tag).
        let meta = image_meta::read(input);
        let (out, extras) = match meta.orientation {
            1 => (out, extras),
            o => {
                let (out, alpha) = image_meta::upright(&out, extras.alpha.as_ref(), o);
                (out, imageio::Extras { alpha, ..extras })
            }
        };
        imageio::write_with_extras(output, &out, &extras, args.quality)?;
        let mut note = if depth_out != depth_in {
            format!(" ({depth_in} -> {depth_out})")
        } else {
            String::new()
        };
        note += match (extras.gray, extras.alpha.is_some(), fmt == Format::Jpeg) {
            (_, true, true) => ", alpha dropped (JPEG has none)",
            (true, true, false) => ", gray with alpha",
            (false, true, false) => ", with alpha",
            (true, false, _) => ", gray",
            _ => "",
        };
        note += &meta.summary();
        eprintln!(
            "{} -> {}: {}x{} {depth_out}{note}, {:.2} s",
            input.display(),
            output.display(),
            out.width,
            out.height,
            t0.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// Denoise one image, (1, 3, H, W) f32 on the CPU, at full precision; (1, 3, H, W) f32 in
/// [0, 1] on the model's device.
fn denoise_image(
    denoiser: &Denoiser,
    x: tch::Tensor,
    strength: f64,
) -> anyhow::Result<tch::Tensor> {
    let x = x.f_to_device(denoiser.device())?;
    let mut y = denoiser.denoise(&x)?;
    if strength < 1.0 {
        // x + (y - x) * strength, in place in y (no full-size temporaries).
        let _ = y
            .f_sub_(&x)?
            .f_mul_scalar_(strength)?
            .f_add_(&x)?
            .f_clamp_(0.0, 1.0)?;
    }
    Ok(y)
}

/// The (input, output) pairs, checked before the model loads: inputs exist and are images,
/// outputs have an image extension, never overwrite an input, and exist only with --force.
/// The output's directory (-o) or --out-dir is created when missing.
fn plan(args: &Args) -> anyhow::Result<Vec<(PathBuf, PathBuf)>> {
    let mut inputs = Vec::new();
    for p in &args.inputs {
        if p.is_dir() {
            let found = imageio::list_images(p)?;
            if found.is_empty() {
                bail!(
                    "{}: no PNG, JPEG or TIFF images in this directory",
                    p.display()
                );
            }
            inputs.extend(found);
        } else if p.is_file() {
            if !imageio::is_image_path(p) {
                bail!(
                    "{}: not an image file name (expected .png, .jpg, .jpeg, .tif or .tiff)",
                    p.display()
                );
            }
            inputs.push(p.clone());
        } else {
            bail!("{}: no such file", p.display());
        }
    }
    let jobs: Vec<(PathBuf, PathBuf)> = match (&args.output, &args.out_dir) {
        (Some(out), _) => {
            if inputs.len() != 1 {
                bail!(
                    "-o/--output takes exactly one input image ({} given); use --out-dir DIR",
                    inputs.len()
                );
            }
            if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!("cannot create the output directory {}", dir.display())
                })?;
            }
            vec![(inputs.remove(0), out.clone())]
        }
        (None, Some(dir)) => {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            inputs
                .into_iter()
                .map(|i| {
                    let name = i.file_name().expect("a file has a name").to_owned();
                    (i, dir.join(name))
                })
                .collect()
        }
        (None, None) => unreachable!("clap requires -o or --out-dir"),
    };
    let mut seen = HashSet::new();
    for (input, output) in &jobs {
        if Format::from_path(output).is_none() {
            bail!(
                "{}: unknown image extension (use .png, .jpg or .tif)",
                output.display()
            );
        }
        if paths::same_file(input, output) {
            bail!(
                "{}: the output is the input file itself; choose another -o or --out-dir",
                output.display()
            );
        }
        if !seen.insert(output.clone()) {
            bail!(
                "{}: two inputs would write the same output file",
                output.display()
            );
        }
        paths::check_overwrite(output, args.force)?;
    }
    Ok(jobs)
}
