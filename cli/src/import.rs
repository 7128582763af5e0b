//! `clipdenoise import`: OpenAI's CLIP RN50.pt and the authors' checkpoints into weights files.
//! The files are read by the core's restricted unpickler: nothing in them is executed.

use std::path::{Path, PathBuf};

use clipdenoise::model::Config;
use clipdenoise::weights::import::{
    checkpoint_provenance, compose, import_checkpoint, import_openai_clip, openai_clip_provenance,
    read_encoder, save_imported,
};
use clipdenoise::weights::Missing;

#[derive(clap::Subcommand)]
#[command(
    after_help = "Examples:\n  clipdenoise import openai-clip RN50.pt -o clip-rn50-encoder.safetensors\n  \
    clipdenoise import checkpoint net_g_latest.pth --encoder clip-rn50-encoder.safetensors -o model.safetensors"
)]
pub enum Command {
    /// Convert OpenAI's CLIP ResNet (RN50.pt, TorchScript, float16) into an encoder-only file
    #[command(
        name = "openai-clip",
        after_help = "Example:\n  clipdenoise import openai-clip ~/.cache/clip/RN50.pt -o clip-rn50-encoder.safetensors\n\n\
        Keeps the stem and layer1..layer3 (layer4, attnpool and the text tower are dropped), as float32.\n\
        The result has no decoder: combine it with a trained checkpoint\n\
        (clipdenoise import checkpoint net_g_latest.pth --encoder clip-rn50-encoder.safetensors -o model.safetensors)\n\
        or train a decoder on it. `clipdenoise weights fetch clip-rn50` downloads and converts RN50.pt."
    )]
    OpenaiClip(OpenaiClipArgs),
    /// Convert the authors' checkpoint (net_g_latest.pth, {'params': state_dict}) into a model file
    #[command(
        after_help = "Examples:\n  clipdenoise import checkpoint net_g_latest.pth -o model.safetensors\n  \
        clipdenoise import checkpoint net_g_latest.pth --encoder clip-rn50-encoder.safetensors -o model.safetensors\n\n\
        Reads 'params' (else 'params_ema', else a bare state dict). With --encoder, the encoder's conv\n\
        weights and BatchNorm affine parameters come from that file and the BatchNorm running\n\
        statistics from the checkpoint (the authors' training updated them)."
    )]
    Checkpoint(CheckpointArgs),
}

#[derive(clap::Args)]
pub struct OpenaiClipArgs {
    /// OpenAI's CLIP ResNet file (RN50.pt)
    input: PathBuf,
    /// Encoder weights file to write (safetensors)
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite the output file if it exists
    #[arg(long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct CheckpointArgs {
    /// The authors' checkpoint (torch.save zip format)
    input: PathBuf,
    /// Encoder weights: an `import openai-clip` output or OpenAI's RN50.pt
    #[arg(long)]
    encoder: Option<PathBuf>,
    /// Model weights file to write (safetensors)
    #[arg(short, long)]
    output: PathBuf,
    /// Overwrite the output file if it exists
    #[arg(long)]
    force: bool,
}

pub fn run(c: Command) -> anyhow::Result<()> {
    match c {
        Command::OpenaiClip(a) => openai_clip(a),
        Command::Checkpoint(a) => checkpoint(a),
    }
}

fn report(output: &Path, config: &Config, what: &str) {
    eprintln!(
        "wrote {} ({what}, model {})",
        output.display(),
        config.name()
    );
}

fn openai_clip(a: OpenaiClipArgs) -> anyhow::Result<()> {
    crate::paths::check_overwrite(&a.output, a.force)?;
    let tensors = import_openai_clip(&a.input)?;
    let prov = openai_clip_provenance(&a.input);
    let config = save_imported(
        &a.output,
        &tensors,
        &a.input,
        &prov,
        Missing::DecoderMayBeMissing,
    )?;
    report(
        &a.output,
        &config,
        &format!("encoder only, {} tensors", tensors.len()),
    );
    Ok(())
}

fn checkpoint(a: CheckpointArgs) -> anyhow::Result<()> {
    crate::paths::check_overwrite(&a.output, a.force)?;
    let ckpt = import_checkpoint(&a.input)?;
    let encoder = a.encoder.as_deref().map(read_encoder).transpose()?;
    let tensors = compose(Some(ckpt), encoder, false)?;
    let prov = checkpoint_provenance(&a.input, a.encoder.as_deref());
    let config = save_imported(&a.output, &tensors, &a.input, &prov, Missing::Error)?;
    report(&a.output, &config, &format!("{} tensors", tensors.len()));
    Ok(())
}
