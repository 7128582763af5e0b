//! `clipdenoise train`: renders the core trainer's events (progress bar or plain lines).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clipdenoise::research::train::{TrainConfig, TrainEvent, Trainer};
use indicatif::{ProgressBar, ProgressStyle};

#[derive(clap::Args)]
#[command(
    after_help = "Examples:\n  clipdenoise train --config configs/default-tiny.toml\n  \
    clipdenoise train --config configs/paper-clip-rn50.toml --max-steps 1000\n\n\
    Runs resume from <run.dir>/checkpoint.safetensors when it exists; Ctrl-C checkpoints and stops."
)]
pub struct Args {
    /// Training config (TOML); relative paths in it are relative to the file
    #[arg(long, short)]
    config: PathBuf,
    /// Stop after this many more steps (the run can be resumed later)
    #[arg(long)]
    max_steps: Option<u64>,
    /// Also copy the final model weights here
    #[arg(long)]
    export: Option<PathBuf>,
}

#[cfg(feature = "gst")]
fn ensure_pool(trainer: &mut Trainer) -> anyhow::Result<()> {
    crate::pool::ensure(trainer)
}

#[cfg(not(feature = "gst"))]
fn ensure_pool(_: &mut Trainer) -> anyhow::Result<()> {
    anyhow::bail!("this config has a [pool] (x264 round trips): build with the `gst` feature")
}

/// Train to the end, `max_steps` more steps, or a stop: without a codec pool in one run, with
/// one in a run per pool generation (each made or reused before its first step).
fn run_generations(
    trainer: &mut Trainer,
    max_steps: Option<u64>,
    stop: &AtomicBool,
    on_event: &mut impl FnMut(TrainEvent),
) -> anyhow::Result<()> {
    let first = trainer.step();
    loop {
        let left = max_steps.map(|m| (first + m).saturating_sub(trainer.step()));
        let chunk = match trainer.cfg.pool.as_ref().map(|p| p.regen_steps) {
            None => left,
            Some(regen) => {
                ensure_pool(trainer)?;
                let to_next = regen - trainer.step() % regen;
                Some(left.map_or(to_next, |l| l.min(to_next)))
            }
        };
        trainer.run(chunk, stop, &mut *on_event)?;
        let done = trainer.step() >= trainer.cfg.optim.steps
            || left.is_some_and(|l| l <= chunk.unwrap_or(l));
        if trainer.cfg.pool.is_none() || done || stop.load(Ordering::Relaxed) {
            return Ok(());
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let cfg = TrainConfig::from_file(&args.config)?;
    let mut trainer = Trainer::new(cfg).context("cannot start training")?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            eprintln!("\ninterrupted: writing a checkpoint, then stopping");
            stop.store(true, Ordering::Relaxed);
        })
        .context("cannot install the Ctrl-C handler")?;
    }
    let tty = std::io::stderr().is_terminal();
    let bar = ProgressBar::hidden();
    let mut last_psnr = f64::NAN;
    let mut on_event = |ev| match ev {
        TrainEvent::Started {
            step,
            total,
            params,
            images,
            resumed,
        } => {
            eprintln!(
                "training: {params} trainable parameters, {images} images, {} at step {step} of {total}",
                if resumed { "resuming" } else { "starting" }
            );
            if tty {
                bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                bar.set_length(total);
                bar.set_position(step);
                bar.set_style(
                    ProgressStyle::with_template("{bar:30} {pos}/{len} {msg} ETA {eta}")
                        .expect("valid template"),
                );
            }
        }
        TrainEvent::Step {
            step,
            loss,
            lr,
            steps_per_s,
            ..
        } => {
            let msg =
                format!("loss {loss:.4} lr {lr:.2e} val {last_psnr:.2} dB {steps_per_s:.2} it/s");
            if tty {
                bar.set_position(step);
                bar.set_message(msg);
            } else if step % 100 == 0 {
                eprintln!("step {step} {msg}");
            }
        }
        TrainEvent::Validation { step, psnr } => {
            last_psnr = psnr;
            bar.suspend(|| {
                eprintln!("step {step}: validation PSNR {psnr:.3} dB (held-out, gaussian 25)")
            });
        }
        TrainEvent::Checkpoint { step, path } => {
            bar.suspend(|| eprintln!("step {step}: checkpoint {}", path.display()));
        }
        TrainEvent::Finished { step, model } => {
            bar.finish_and_clear();
            eprintln!("stopped at step {step}; model weights: {}", model.display());
        }
    };
    run_generations(&mut trainer, args.max_steps, &stop, &mut on_event)?;
    if let Some(out) = args.export {
        trainer
            .export(&out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("exported {}", out.display());
    }
    Ok(())
}
