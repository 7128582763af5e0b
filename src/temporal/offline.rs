//! Offline mode: every output frame also sees up to `lookahead` later frames.
//!
//! A forward recursion (the causal filter's output stage, [`super::TemporalFilter::apply`])
//! runs as frames arrive.
//! A frame leaves once `lookahead` frames after it are in: a backward recursion (the same
//! filter, started afresh on the last frame of the window and run back to the frame) gives
//! the future's estimate of it, and the two are combined by their per-pixel counts, the frame
//! itself counted once: `(f * nf + b * nb - y) / (nf + nb - 1)`. Where the future does not
//! match (motion, occlusion, a cut) `nb` is 1 and the frame is the causal output; where the
//! past does not, the future alone. Memory: the window of `lookahead + 1` per-frame results
//! and their forward estimates ([`Lookahead::memory_bytes`]); work: `lookahead + 1` motion
//! searches per frame. [`Lookahead::finish`] empties the window in order (end of stream).

use std::collections::VecDeque;

use tch::{Kind, Tensor};

use super::{cap, Recursion};
use crate::error::Result;

/// Per-frame results waiting for their future, with their forward estimate and count.
struct Held {
    cur: Tensor,
    forward: Tensor,
    count: Tensor,
}

/// The offline filter of one stream.
pub struct Lookahead {
    lookahead: usize,
    forward: Recursion,
    window: VecDeque<Held>,
}

impl std::fmt::Debug for Lookahead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookahead")
            .field("lookahead", &self.lookahead)
            .field("held", &self.window.len())
            .finish()
    }
}

impl Lookahead {
    /// A filter that holds each frame until `lookahead` later frames have arrived.
    pub fn new(lookahead: usize) -> Self {
        Lookahead {
            lookahead,
            forward: Recursion::default(),
            window: VecDeque::new(),
        }
    }

    /// Frames of lookahead.
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// Frames held now (at most `lookahead`).
    pub fn held(&self) -> usize {
        self.window.len()
    }

    /// Bytes of frames held now.
    pub fn memory_bytes(&self) -> u64 {
        self.window
            .iter()
            .map(|h| {
                [&h.cur, &h.forward, &h.count]
                    .iter()
                    .map(|t| (t.numel() * t.kind().elt_size_in_bytes()) as u64)
                    .sum::<u64>()
            })
            .sum()
    }

    /// The most bytes held for frames of `height` x `width` with `lookahead` frames.
    pub fn max_memory_bytes(lookahead: usize, height: i64, width: i64) -> u64 {
        // cur and forward (3 channels) and count (1), float, per held frame, plus the one
        // arriving.
        ((lookahead as u64) + 1) * 7 * 4 * (height * width) as u64
    }

    /// Drop everything held (a flush): nothing more comes out for it.
    pub fn reset(&mut self) {
        self.forward.reset();
        self.window.clear();
    }

    /// Scene cuts the forward recursion detected.
    pub fn scene_cuts(&self) -> u64 {
        self.forward.cuts
    }

    /// Take the per-frame results `frames` (`[N, 3, H, W]`, display order); returns the frames
    /// that are complete now, oldest first (as many as went in, once `lookahead` are held).
    /// A frame of another size first empties the window ([`Lookahead::finish`]).
    pub fn push(&mut self, frames: &Tensor, amount: f64) -> Result<Vec<Tensor>> {
        let mut out = Vec::new();
        for i in 0..frames.size()[0] {
            let cur = frames.f_narrow(0, i, 1)?.f_to_kind(Kind::Float)?;
            if self
                .window
                .back()
                .is_some_and(|h| h.cur.size() != cur.size())
            {
                out.extend(self.finish(amount)?);
            }
            let (forward, count) = self.forward.step(&cur, cap(amount))?;
            self.window.push_back(Held {
                cur,
                forward,
                count,
            });
            if self.window.len() > self.lookahead {
                out.push(self.emit(amount)?);
            }
        }
        Ok(out)
    }

    /// Everything held, in order (end of stream); the forward state is kept.
    pub fn finish(&mut self, amount: f64) -> Result<Vec<Tensor>> {
        let mut out = Vec::with_capacity(self.window.len());
        while !self.window.is_empty() {
            out.push(self.emit(amount)?);
        }
        Ok(out)
    }

    /// The oldest held frame, combined with the backward recursion over the window.
    fn emit(&mut self, amount: f64) -> Result<Tensor> {
        let c = cap(amount);
        let mut backward = Recursion::default();
        let mut b = None;
        for h in self.window.iter().rev() {
            b = Some(backward.step(&h.cur, c)?);
        }
        let held = self.window.pop_front().expect("emit on an empty window");
        match b {
            Some((b, nb)) => combine(&held, &b, &nb),
            None => Ok(held.forward),
        }
    }
}

/// `(f * nf + b * nb - y) / (nf + nb - 1)`.
fn combine(h: &Held, b: &Tensor, nb: &Tensor) -> Result<Tensor> {
    let num = h
        .forward
        .f_mul(&h.count)?
        .f_add(&b.f_mul(nb)?)?
        .f_sub(&h.cur)?;
    let den = h.count.f_add(nb)?.f_sub_scalar(1.0)?;
    Ok(num.f_div(&den)?)
}
