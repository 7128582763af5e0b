//! `clipdenoise train`: renders the core trainer's events (progress bar or plain lines).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clipdenoise::research::train::{TrainConfig, TrainEvent, Trainer};

use crate::progress::Progress;

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
    crate::interrupt::install_stop_flag(
        "interrupted: writing a checkpoint, then stopping",
        stop.clone(),
    )?;
    let mut view = TrainProgress {
        progress: None,
        last_psnr: f64::NAN,
    };
    let mut on_event = |ev| view.on_event(ev);
    run_generations(&mut trainer, args.max_steps, &stop, &mut on_event)?;
    if let Some(out) = args.export {
        trainer
            .export(&out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        eprintln!("exported {}", out.display());
    }
    Ok(())
}

/// The trainer's events on stderr: a bar over the steps on a terminal (plain lines every 100
/// steps otherwise), validation and checkpoint lines above it.
struct TrainProgress {
    progress: Option<Progress>,
    last_psnr: f64,
}

impl TrainProgress {
    fn on_event(&mut self, ev: TrainEvent) {
        match ev {
            TrainEvent::Started {
                step,
                total,
                params,
                images,
                resumed,
                warm_start,
            } => {
                eprintln!(
                    "training: {params} trainable parameters, {images} images, {} at step {step} of {total}",
                    if resumed { "resuming" } else { "starting" }
                );
                if let Some(w) = warm_start {
                    eprintln!("init: {w}");
                }
                let p = Progress::new("{bar:30} {pos}/{len} {msg} ETA {eta}", Some(total));
                if let Some(bar) = p.bar() {
                    bar.set_position(step);
                }
                self.progress = Some(p);
            }
            TrainEvent::Step {
                step,
                loss,
                lr,
                steps_per_s,
                ..
            } => {
                let msg = format!(
                    "loss {loss:.4} lr {lr:.2e} val {:.2} dB {steps_per_s:.2} it/s",
                    self.last_psnr
                );
                match self.progress.as_ref().and_then(Progress::bar) {
                    Some(bar) => {
                        bar.set_position(step);
                        bar.set_message(msg);
                    }
                    None if step % 100 == 0 => eprintln!("step {step} {msg}"),
                    None => {}
                }
            }
            TrainEvent::Validation { step, psnr } => {
                self.last_psnr = psnr;
                self.println(&format!(
                    "step {step}: validation PSNR {psnr:.3} dB (held-out, gaussian 25)"
                ));
            }
            TrainEvent::Checkpoint { step, path } => {
                self.println(&format!("step {step}: checkpoint {}", path.display()));
            }
            TrainEvent::Snapshot { step, path } => {
                self.println(&format!("step {step}: snapshot {}", path.display()));
            }
            TrainEvent::Finished { step, model } => {
                if let Some(p) = self.progress.as_mut() {
                    p.finish();
                }
                eprintln!("stopped at step {step}; model weights: {}", model.display());
            }
        }
    }

    fn println(&self, line: &str) {
        match &self.progress {
            Some(p) => p.println(line),
            None => eprintln!("{line}"),
        }
    }
}
