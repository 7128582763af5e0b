//! `clipdenoise eval`: the paper's evaluation protocol (clipdenoise::research::eval) with a progress bar
//! on stderr and the results on stdout as text tables, Markdown or JSON.

use std::path::PathBuf;

use anyhow::Context;
use clipdenoise::inference::{Denoiser, DeviceRequest, Options, Precision};
use clipdenoise::research::eval::{self, EvalConfig, Event};
use clipdenoise::research::noise::NoiseSpec;
use clipdenoise::weights::ModelSource;

use crate::models::RefineArgs;
use crate::progress::Progress;
use crate::weights::{parse_lowpass, LowpassSetting};

/// The paper's synthetic grid, used when no `--noise` is given.
const DEFAULT_NOISE: [&str; 3] = [
    "gaussian:15,25,50",
    "correlated:40,45,50,55",
    "poisson:2,2.5,3,3.5",
];

#[derive(clap::Args)]
#[command(after_help = "Example (the full grid of the paper on three sets):\n  \
    clipdenoise eval --dataset data/CBSD68 --dataset data/Kodak24 --dataset data/McMaster \\\n    \
    --noise gaussian:15,25,50 --noise correlated:40,45,50,55 --noise poisson:2,2.5,3,3.5 --markdown\n\n\
    Protocol: images sorted by file name; per image and noise spec the noise is seeded with\n\
    FNV-1a-64(\"SEED/SPEC/INDEX\") and drawn on the CPU; gaussian and correlated inputs are not\n\
    clipped; the whole image is denoised, clamped to [0,1], scaled by 255 without rounding;\n\
    PSNR (RGB, no crop) and MATLAB-style SSIM in float64, averaged per set. Real pairs\n\
    (--pairs DIR with noisy/ and clean/ inside, matched by file name) round the output to uint8.\n\
    Every row also shows the output's shift against its input per channel (0..255): the mean\n\
    over the image, and the mean absolute Gaussian (sigma 8) low-pass of the difference. Clean\n\
    images in, shift out: --dataset data/Kodak24 --noise gaussian:0")]
pub struct Args {
    /// Weights file, or `default` for the built-in model
    #[arg(long, short, default_value = "default", help_heading = "Model")]
    model: String,
    /// Device: auto, cpu, cuda, cuda:N
    #[arg(long, default_value = "auto", help_heading = "Model")]
    device: DeviceRequest,
    /// Arithmetic: fp32, bf16, fp16 (CUDA only), auto (the faster; fp32 stays the default
    /// here so that quality figures do not depend on the machine's speed)
    #[arg(long, default_value = "fp32", help_heading = "Model")]
    precision: Precision,
    /// Also remove coarse grain (low light, phones): a first pass on the frame's four
    /// pixel-shuffled half-size sub-images, then the usual one. Twice the compute; on
    /// fine-grained noise it loses detail (weights/README.md)
    #[arg(long, help_heading = "Model")]
    coarse_grain: bool,
    /// Replace the output's low-pass (Gaussian, this sigma in pixels) by the input's, or
    /// `off`; default: what the model's config says (keep_input_lowpass)
    #[arg(long, value_name = "SIGMA|off", value_parser = parse_lowpass, help_heading = "Model")]
    keep_input_lowpass: Option<LowpassSetting>,
    #[command(flatten)]
    refine: RefineArgs,

    /// Folder of clean images (PNG, JPEG, TIFF); repeat for several sets
    #[arg(long = "dataset", value_name = "DIR", help_heading = "Data")]
    datasets: Vec<PathBuf>,
    /// Noise specs TYPE:L1,L2,... (gaussian, correlated, poisson); repeatable.
    /// Default: gaussian:15,25,50 correlated:40,45,50,55 poisson:2,2.5,3,3.5
    #[arg(long = "noise", value_name = "SPEC", help_heading = "Data")]
    noises: Vec<String>,
    /// Folder of real noisy/clean pairs (subfolders noisy/ and clean/); repeatable
    #[arg(long = "pairs", value_name = "DIR", help_heading = "Data")]
    pairs: Vec<PathBuf>,
    /// Only the first N images (by name) of each folder
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..), help_heading = "Data")]
    limit: Option<u64>,
    /// Base seed of the per-image noise seeds (0 for comparable numbers)
    #[arg(long, default_value_t = 0, help_heading = "Data")]
    seed: u64,

    /// Print the results as JSON (per image and per set)
    #[arg(long, conflicts_with = "markdown", help_heading = "Output")]
    json: bool,
    /// Print the results as one Markdown table (rows: noise; columns: PSNR/SSIM per set)
    #[arg(long, help_heading = "Output")]
    markdown: bool,
    /// Also write the exact noisy inputs as float32 .npy files plus manifest.json under DIR
    /// (input of tools/classical_baseline.py)
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    dump_noisy: Option<PathBuf>,
    /// With --dump-noisy: only write the noisy inputs, load and run no model
    #[arg(long, requires = "dump_noisy", help_heading = "Output")]
    dump_only: bool,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = config(&args)?;
    let mut view = EvalProgress::default();
    if args.dump_only {
        let dir = args
            .dump_noisy
            .as_ref()
            .expect("clap requires --dump-noisy");
        let manifest = eval::dump_noisy(&cfg, dir, |ev| view.on_event(ev))?;
        view.finish();
        eprintln!(
            "wrote {} noisy inputs and {}",
            manifest.cases.len(),
            dir.join("manifest.json").display()
        );
        return Ok(());
    }
    let (source, denoiser) = load_denoiser(&args)?;
    let mut report = eval::evaluate(&denoiser, &cfg, |ev| view.on_event(ev))?;
    view.finish();
    report.model = format!("{source}: {}", report.model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.markdown {
        print!("{}", report.to_markdown());
    } else {
        print!("{}", report.to_text());
    }
    if let Some(dir) = &args.dump_noisy {
        eprintln!("noisy inputs: {}", dir.join("manifest.json").display());
    }
    eprintln!("{:.1} s", report.seconds);
    Ok(())
}

/// The evaluation the arguments ask for (the paper's grid when no `--noise` is given).
fn config(args: &Args) -> anyhow::Result<EvalConfig> {
    let specs: Vec<String> = if args.noises.is_empty() {
        DEFAULT_NOISE.iter().map(|s| s.to_string()).collect()
    } else {
        args.noises.clone()
    };
    let mut noises: Vec<NoiseSpec> = Vec::new();
    for s in &specs {
        for n in NoiseSpec::parse_list(s)? {
            if !noises.contains(&n) {
                noises.push(n);
            }
        }
    }
    if args.datasets.is_empty() && args.pairs.is_empty() {
        anyhow::bail!("nothing to evaluate: give --dataset DIR and/or --pairs DIR");
    }
    Ok(EvalConfig {
        datasets: args.datasets.clone(),
        noises,
        pairs: args.pairs.clone(),
        limit: args.limit.map(|n| n as usize),
        seed: args.seed,
        dump_noisy: args.dump_noisy.clone(),
    })
}

/// The model, for whole-image inference (no tiling), as the protocol wants.
fn load_denoiser(args: &Args) -> anyhow::Result<(ModelSource, Denoiser)> {
    let device = args.device.resolve()?;
    let source = ModelSource::parse(&args.model);
    let mut loaded = source
        .load(device)
        .with_context(|| format!("cannot load model {source}"))?;
    if let Some(LowpassSetting(sigma)) = args.keep_input_lowpass {
        loaded.model.config.keep_input_lowpass = sigma;
        loaded.model.config.validate()?;
    }
    let opts = Options {
        device,
        precision: args.precision,
        max_pixels: 0,
        coarse_grain: args.coarse_grain,
        refine: args.refine.refine,
        ..Options::default()
    };
    let denoiser = Denoiser::new(loaded, opts)?;
    let lowpass = match denoiser.config().keep_input_lowpass {
        Some(s) => format!(", input low-pass kept (sigma {s})"),
        None => String::new(),
    };
    let refine = match args.refine.refine.is_off() {
        true => String::new(),
        false => format!(", refine {}", args.refine.refine),
    };
    eprintln!(
        "model {source}: {} on {}, {}{lowpass}{refine}",
        denoiser.config().name(),
        format!("{device:?}").to_lowercase(),
        args.precision
    );
    Ok((source, denoiser))
}

/// The evaluation's events on stderr: a bar over the cases on a terminal, the folder lines
/// above it.
#[derive(Default)]
struct EvalProgress {
    progress: Option<Progress>,
}

impl EvalProgress {
    fn on_event(&mut self, ev: &Event) {
        match ev {
            Event::Started { cases } => {
                self.progress = Some(Progress::new(
                    "{bar:30} {pos}/{len} {msg} [{elapsed} < {eta}]",
                    Some(*cases as u64),
                ));
            }
            Event::Folder {
                name,
                images,
                noises,
            } => self.println(&format!("{name}: {images} images x {noises} noise")),
            Event::Case {
                folder,
                image,
                noise,
                score,
                done,
                ..
            } => {
                let noise = noise
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "real".into());
                let s = score
                    .as_ref()
                    .map(|s| format!(" {:.2} dB", s.psnr))
                    .unwrap_or_default();
                if let Some(bar) = self.progress.as_ref().and_then(Progress::bar) {
                    bar.set_position(*done as u64);
                    bar.set_message(format!("{folder} {noise} {image}{s}"));
                }
            }
        }
    }

    fn println(&self, line: &str) {
        match &self.progress {
            Some(p) => p.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(p) = self.progress.as_mut() {
            p.finish();
        }
    }
}
