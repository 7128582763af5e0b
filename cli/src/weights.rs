//! `clipdenoise weights fetch`: renders the core's download events (progress bar on a
//! terminal, plain lines otherwise); `clipdenoise weights average`: the core's weight mean.

use std::path::PathBuf;

use clipdenoise::weights::average::{self, Share};
use clipdenoise::weights::fetch::{self, FetchEvent, FetchSpec, ENV_BASE_URL, ENV_CACHE_DIR};

use crate::progress::Progress;

/// Where the paper's authors publish their trained checkpoints (BasicSR `net_g_*.pth` files).
pub const AUTHORS_CHECKPOINTS: &str = "the Google Drive folder \
    https://drive.google.com/drive/folders/1F8md2zen0iPlhGnI5-VdjdBOLY8DBIiF linked as 'Pre-trained \
    models' from https://github.com/alwaysuu/CLIPDenoising";

/// The encoder-only file `weights fetch clip-rn50` writes into the cache.
pub const ENCODER_FILE: &str = "clip-rn50-encoder.safetensors";

/// The paper's model from its two published halves (a macro: `concat!` takes literals only).
macro_rules! paper_model {
    () => {
        "The paper's model needs two downloads: OpenAI's CLIP RN50 encoder (fetched here) and the \
    authors' trained decoder, a checkpoint such as net_g_latest.pth, published in the Google Drive folder \
    https://drive.google.com/drive/folders/1F8md2zen0iPlhGnI5-VdjdBOLY8DBIiF ('Pre-trained models' in \
    https://github.com/alwaysuu/CLIPDenoising; download it with a browser). Then:\n  \
    clipdenoise weights fetch clip-rn50\n  \
    clipdenoise import checkpoint net_g_latest.pth --encoder <cache>/clip-rn50-encoder.safetensors -o clipdenoise-rn50.safetensors\n\
    (the first prints the <cache> path). `clipdenoise info` says which of them are present."
    };
}

#[derive(clap::Subcommand)]
#[command(after_help = concat!("Example:\n  clipdenoise weights fetch clip-rn50\n\n", paper_model!()))]
pub enum Command {
    /// Download published weights into the cache, verify their SHA-256 and convert them
    #[command(after_help = concat!("Example:\n  clipdenoise weights fetch clip-rn50\n\n\
        clip-rn50 is OpenAI's CLIP RN50 (RN50.pt, ~244 MB). It becomes\n\
        <cache>/clip-rn50-encoder.safetensors, an encoder-only file: combine it with a trained\n\
        decoder or train a decoder on it. An interrupted download resumes where it stopped.\n\n", paper_model!()))]
    Fetch(FetchArgs),
    /// Average weight files of one model (stochastic weight averaging, model soups)
    #[command(
        after_help = "Example:\n  clipdenoise weights average runs/swa-tiny/snapshots/*.safetensors -o swa.safetensors\n\n\
        Every input must be the same model (width, blocks, coarse-grain); each is checked as\n\
        when it is loaded for inference. The output records its inputs in its provenance."
    )]
    Average(AverageArgs),
    /// Copy a weights file with inference settings of its config changed (tensors unchanged)
    #[command(
        after_help = "Example (the shipped default keeps its input's low-pass, sigma 12):\n  \
        clipdenoise weights configure weights/clipdenoise-tiny.safetensors --keep-input-lowpass 12 -o out.safetensors"
    )]
    Configure(ConfigureArgs),
}

#[derive(clap::Args)]
pub struct ConfigureArgs {
    /// The weights file to copy
    input: PathBuf,
    /// Output weights file (written atomically; may be the input)
    #[arg(long, short)]
    output: PathBuf,
    /// Inference replaces the output's low-pass (Gaussian, this sigma in pixels) by the
    /// input's, or `off`
    #[arg(long, value_name = "SIGMA|off", value_parser = parse_lowpass)]
    keep_input_lowpass: Option<LowpassSetting>,
}

/// A `--keep-input-lowpass` value: a sigma, or `off` (none).
#[derive(Debug, Clone, Copy)]
pub struct LowpassSetting(pub Option<f64>);

pub fn parse_lowpass(s: &str) -> Result<LowpassSetting, String> {
    clipdenoise::lowpass::parse_setting(s)
        .map(LowpassSetting)
        .map_err(|e| e.to_string())
}

#[derive(clap::ValueEnum, Clone, Copy)]
enum Name {
    /// OpenAI CLIP RN50 image encoder (the paper's frozen encoder)
    ClipRn50,
}

#[derive(clap::Args)]
pub struct FetchArgs {
    /// What to fetch
    #[arg(value_enum)]
    name: Name,
    /// Download from this base URL instead (the file is <base-url>/<sha256>/RN50.pt)
    #[arg(long, env = ENV_BASE_URL)]
    base_url: Option<String>,
    /// Cache directory [default: the user's cache directory + /clipdenoise]
    #[arg(long, env = ENV_CACHE_DIR)]
    cache_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct AverageArgs {
    /// Weight files to average (at least two)
    #[arg(required = true, num_args = 2..)]
    inputs: Vec<PathBuf>,
    /// Output weights file (written atomically)
    #[arg(long, short)]
    output: PathBuf,
    /// Shares of the inputs, in their order (comma-separated positive numbers) [default: equal]
    #[arg(long, value_delimiter = ',')]
    shares: Option<Vec<f64>>,
}

pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::Fetch(a) => fetch_cmd(a),
        Command::Average(a) => average_cmd(a),
        Command::Configure(a) => configure_cmd(a),
    }
}

fn configure_cmd(a: ConfigureArgs) -> anyhow::Result<()> {
    let Some(LowpassSetting(keep)) = a.keep_input_lowpass else {
        anyhow::bail!("nothing to change: give --keep-input-lowpass SIGMA|off");
    };
    let config = clipdenoise::weights::reconfigure(&a.input, &a.output, |c| {
        c.keep_input_lowpass = keep;
    })?;
    eprintln!(
        "wrote {} ({}, keep_input_lowpass {})",
        a.output.display(),
        config.name(),
        config
            .keep_input_lowpass
            .map_or("off".to_string(), |s| s.to_string())
    );
    Ok(())
}

fn average_cmd(a: AverageArgs) -> anyhow::Result<()> {
    let shares = match a.shares {
        None => vec![1.0; a.inputs.len()],
        Some(s) if s.len() == a.inputs.len() => s,
        Some(s) => anyhow::bail!(
            "--shares has {} values for {} input files: give one per input",
            s.len(),
            a.inputs.len()
        ),
    };
    let inputs: Vec<Share> = a
        .inputs
        .into_iter()
        .zip(shares)
        .map(|(p, w)| Share::new(p, w))
        .collect();
    let config = average::average(&inputs, &a.output)?;
    eprintln!(
        "averaged {} weight files (width {}, blocks {:?}) into {}",
        inputs.len(),
        config.width,
        config.blocks,
        a.output.display()
    );
    Ok(())
}

fn fetch_cmd(a: FetchArgs) -> anyhow::Result<()> {
    let mut spec = match a.name {
        Name::ClipRn50 => FetchSpec::clip_rn50(),
    };
    if let Some(base) = &a.base_url {
        spec = spec.with_base_url(base);
    }
    let cache = fetch::cache_dir(a.cache_dir.as_deref())?;
    eprintln!("fetching {} into {}", spec.url(), cache.display());
    let mut ui = Ui::new();
    let out = fetch::fetch(&spec, &cache, |e| ui.event(e));
    ui.finish();
    let out = out?;
    println!("{}", out.display());
    Ok(())
}

/// A bar on a terminal; otherwise a line every 10 %.
struct Ui {
    progress: Option<Progress>,
    next_report: u64,
}

impl Ui {
    fn new() -> Ui {
        Ui {
            progress: None,
            next_report: 0,
        }
    }

    fn println(&self, s: &str) {
        match &self.progress {
            Some(p) => p.println(s),
            None => eprintln!("{s}"),
        }
    }

    fn finish(&mut self) {
        if let Some(p) = &mut self.progress {
            p.finish();
        }
    }

    fn event(&mut self, e: FetchEvent) {
        match e {
            FetchEvent::Started {
                total,
                resumed_from,
            } => {
                if resumed_from > 0 {
                    self.println(&format!("resuming at {}", human(resumed_from)));
                }
                let template = "{bar:30} {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}";
                let progress = Progress::new(template, total);
                if let Some(b) = progress.bar() {
                    b.set_position(resumed_from);
                }
                self.progress = Some(progress);
                self.next_report = resumed_from;
            }
            FetchEvent::Progress { done, total } => {
                if let Some(b) = self.progress.as_ref().and_then(|p| p.bar()) {
                    b.set_position(done);
                } else if done >= self.next_report {
                    let of = total
                        .map(|t| format!(" of {}", human(t)))
                        .unwrap_or_default();
                    eprintln!("downloaded {}{of}", human(done));
                    self.next_report = done + total.map_or(8 << 20, |t| (t / 10).max(1));
                }
            }
            FetchEvent::Verified => {
                self.finish();
                eprintln!("SHA-256 verified; converting");
            }
            FetchEvent::Converted { path } => eprintln!("wrote {} (encoder only)", path.display()),
        }
    }
}

fn human(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}
