//! The `clipdenoise` command line: a thin layer over the core library's API and events.
//! One module per subcommand, each with its clap `Args` and a `run` (`video` is a folder of
//! its own), and what they share: the model options (`models`), path checks (`paths`), the
//! progress display (`progress`) and the Ctrl-C handler (`interrupt`). The GStreamer element
//! comes from the plugin's rlib, registered in-process by `video`.

// jemalloc as the process allocator, exported unprefixed so libtorch allocates through it too,
// with pages retained (TOOLCHAIN.md: glibc malloc mmaps/unmaps every large activation).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc reads its options from this exported symbol at start-up.
#[cfg(feature = "jemalloc")]
#[allow(non_upper_case_globals)]
#[export_name = "malloc_conf"]
pub static malloc_conf: &[u8; 36] = b"dirty_decay_ms:-1,muzzy_decay_ms:-1\0";

mod bench;
mod eval;
#[cfg(feature = "gst")]
mod eval_video;
#[cfg(feature = "gst")]
mod gst_frames;
mod image;
mod image_meta;
mod import;
mod info;
#[cfg(feature = "gst")]
mod interrupt;
#[cfg(feature = "gst")]
mod job;
#[cfg(feature = "gst")]
mod label;
mod models;
mod paths;
#[cfg(feature = "gst")]
mod pool;
mod progress;
mod train;
#[cfg(feature = "gst")]
mod video;
mod weights;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "clipdenoise",
    version,
    about = "Streaming video denoiser: the CLIPDenoising network (CVPR 2024) on libtorch",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Denoise a video file through a GStreamer pipeline around the clipdenoise element
    #[cfg(feature = "gst")]
    Video(video::Args),
    /// Plan an offline job in segments for many machines (or --status of one)
    #[cfg(feature = "gst")]
    Plan(job::plan::Args),
    /// Run one segment of a planned job (the index from the job array by default)
    #[cfg(feature = "gst")]
    Segment(job::segment::Args),
    /// Join a job's done segments into one file, without re-encoding
    #[cfg(feature = "gst")]
    Join(job::join::Args),
    /// Denoise still images (PNG 8/16-bit, JPEG, TIFF)
    Image(image::Args),
    /// Show versions, devices and the models found
    Info(info::Args),
    /// Convert OpenAI CLIP or the authors' checkpoints into clipdenoise weights
    #[command(subcommand)]
    Import(import::Command),
    /// Download and convert published weights; average weight files
    #[command(subcommand)]
    Weights(weights::Command),
    /// Train a model from a TOML config (checkpoints and resumes)
    Train(train::Args),
    /// Evaluate PSNR/SSIM with the paper's protocol
    Eval(eval::Args),
    /// Evaluate on camera noise after H.264 at several CRFs, through the element
    #[cfg(feature = "gst")]
    EvalVideo(eval_video::Args),
    /// Measure throughput, latency and memory of the worker stage
    Bench(bench::Args),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        #[cfg(feature = "gst")]
        Command::Video(a) => video::run(a),
        #[cfg(feature = "gst")]
        Command::Plan(a) => job::plan::run(a),
        #[cfg(feature = "gst")]
        Command::Segment(a) => job::segment::run(a),
        #[cfg(feature = "gst")]
        Command::Join(a) => job::join::run(a),
        Command::Image(a) => image::run(a),
        Command::Info(a) => info::run(a),
        Command::Import(c) => import::run(c),
        Command::Weights(c) => weights::run(c),
        Command::Train(a) => train::run(a),
        Command::Eval(a) => eval::run(a),
        #[cfg(feature = "gst")]
        Command::EvalVideo(a) => eval_video::run(a),
        Command::Bench(a) => bench::run(a),
    }
}

/// libgomp (libtorch's OpenMP) spins its idle threads unless OMP_WAIT_POLICY=PASSIVE. On small
/// machines shared with decoders, encoders or other processes, spinning threads starve the
/// ones doing work (measured: 1.5x to 100x slower under load). libgomp reads the variable when
/// it is loaded, before `main`, so set it by re-executing once; an explicit value is kept.
fn ensure_passive_openmp() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("OMP_WAIT_POLICY").is_some() {
        return;
    }
    if let Ok(exe) = std::env::current_exe() {
        // `exec` only returns on failure, and then we simply run as we are.
        let _ = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("OMP_WAIT_POLICY", "PASSIVE")
            .exec();
    }
}

/// The command line; `video`'s help is completed from the installed encoders (only when the
/// arguments name `video`: GStreamer is not started for the other subcommands).
fn parse() -> Cli {
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    #[cfg(feature = "gst")]
    if std::env::args().any(|a| a == "video") {
        cmd = cmd.mut_subcommand("video", video::with_encoder_ranges);
    }
    let matches = cmd.get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

fn main() {
    ensure_passive_openmp();
    let cli = parse();
    if let Err(e) = run(cli) {
        // One line: the error and its causes, no backtrace.
        let mut msg = format!("error: {e}");
        for cause in e.chain().skip(1) {
            msg.push_str(&format!(": {cause}"));
        }
        eprintln!("{msg}");
        std::process::exit(1);
    }
}
