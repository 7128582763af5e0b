//! Motion-compensated temporal denoising of the network's input (a recursive filter, as
//! V-BM4D- and EMVD-style video denoisers do), causal (no latency) or with lookahead.
//!
//! The camera noise of consecutive frames is independent, so a short motion-aligned average
//! of the input leaves the network less to remove while it still sees every detail. Each new
//! frame is fused with the previous fused input moved onto it:
//! - [`motion`]: block motion on luma, coarse to fine over a 3-level pyramid, integer vectors,
//!   warping by copying pixels;
//! - [`fusion`]: the per-pixel confidence from the aligned difference relative to the frame's
//!   noise level, a per-pixel count of averaged frames (capped: [`cap`]), scene cuts;
//! - [`offline`]: with a lookahead, a backward recursion over the later frames combined with
//!   the forward one (the engine's offline mode, [`TemporalFilter::set_future`]);
//! - [`cpu`]: all of the above on CPU tensors in plain Rust, the same numbers bit for bit as
//!   the tch ops, which run it where the frames are on CUDA (about 12x faster than those ops
//!   on a 2-core CPU: `examples/temporal_step.rs`);
//! - this module: the stream's state ([`TemporalFilter`]), which a flush, a gap (the engine's
//!   reset), a new frame size, a scene cut or `amount = 0` drops.
//!
//! Fusing the network's output as well (a second recursion of up to 8 frames after it) was
//! tried and lost: -0.45 dB on the compressed-video evaluation next to the input fusion alone,
//! -0.0 to +0.2 dB alone (weights/README.md).
//!
//! `amount` (the element's `temporal`, 0..1) sets how many frames a still pixel averages:
//! [`cap`]. A segment of a stream processed on its own equals one pass over the stream once
//! [`warmup_frames`] frames have gone through the filter before the segment's first output,
//! and, offline, [`lookahead_frames`] after its last.

pub mod cpu;
pub mod fusion;
pub mod motion;
pub mod offline;
pub mod output;
#[cfg(test)]
mod tests;

use tch::Tensor;

use crate::error::Result;

/// Frames a still pixel of the network's input averages at the element's default
/// `temporal=0.5` (more removes detail the network would have kept: 2.4 was the best of 2,
/// 2.4, 3.1, 4.5 and 8 on the compressed-video evaluation, weights/README.md).
pub const DEFAULT_FRAMES: f64 = 2.4;

/// The most frames one pixel averages at `amount` (0..1): 1 at 0, [`DEFAULT_FRAMES`] at 0.5,
/// `2 * DEFAULT_FRAMES - 1` at 1.
pub fn cap(amount: f64) -> f64 {
    1.0 + 2.0 * amount.clamp(0.0, 1.0) * (DEFAULT_FRAMES - 1.0)
}

/// The forward recursion restarts every this many frames of the stream ([`Staggered`]): a
/// frame's input depends on at most `2 * RESTART_PERIOD - 1` earlier frames. The state the
/// output uses holds at least this many frames: their missing history weighs at most
/// `((cap - 1) / cap)^16`, 2e-4 at the default `temporal=0.5`, 0.7% at 1.
pub const RESTART_PERIOD: u64 = 16;

/// Frames a segment of a stream must put through the filter before its first output for
/// that output, and every later one, to equal one pass over the whole stream, bit for bit
/// (the filter's `origin` set to the index of the segment's first frame: [`Staggered`]).
/// A recursion that never restarts does not converge: its discrete decisions (block vectors,
/// the frame's median threshold) depend on the state it carries, and a segment started 22
/// frames early at `temporal=0.3` still differed in 4-5% of the values 50 frames on (1 LSB,
/// up to 14). 0 when `amount` is 0.
pub fn warmup_frames(amount: f64) -> usize {
    if cap(amount) <= 1.0 {
        return 0;
    }
    (2 * RESTART_PERIOD - 1) as usize
}

/// The largest offline window (`lookahead`, frames) the element and the CLI accept: each held
/// frame is a full-size frame in memory.
pub const MAX_LOOKAHEAD: u32 = 8;

/// Frames after a segment's last output that must go in for it to equal one pass, at the
/// element's `lookahead` (the window itself: the backward recursion starts afresh there).
pub fn lookahead_frames(lookahead: usize) -> usize {
    lookahead
}

/// One recursion: the last fused frame and its per-pixel counts.
#[derive(Default)]
pub(crate) struct Recursion {
    state: Option<fusion::State>,
    cuts: u64,
}

impl Recursion {
    /// One frame `[1, 3, H, W]` through the recursion at `cap`: the fused frame and its
    /// per-pixel count of frames (`[1, 1, H, W]` float).
    pub(crate) fn step(&mut self, cur: &Tensor, cap: f64) -> Result<(Tensor, Tensor)> {
        let step = match self.state.take() {
            Some(prev) if prev.fits(cur) => {
                let step = fusion::step(cur, &prev, cap)?;
                self.cuts += step.cut as u64;
                step
            }
            _ => fusion::Step::fresh(cur)?,
        };
        let count = step.state.count.shallow_clone();
        self.state = Some(step.state);
        Ok((step.out, count))
    }

    pub(crate) fn reset(&mut self) {
        self.state = None;
    }
}

/// The forward recursion of a stream as two staggered recursions: one restarts at the
/// stream's frames `2k * P`, the other at `(2k + 1) * P` (`P` = [`RESTART_PERIOD`], frames
/// counted from `origin`); frame `t` takes the one that restarted at `floor(t / P) * P - P`
/// (the one of `[0, P)` before that). So its result depends on frames `t - 2P + 1 ..= t` only,
/// and a segment of the stream started [`warmup_frames`] early with `origin` its first frame's
/// index gives one pass's frames exactly. Costs a second motion search per frame, so only
/// with an origin set ([`TemporalFilter::set_origin`]: the CLI's files and jobs); without one
/// (the element's default, live streams) one recursion runs and never restarts.
#[derive(Default)]
pub(crate) struct Staggered {
    even: Recursion,
    odd: Recursion,
    /// The stream index of the next frame.
    next: u64,
    /// The stream index of the first frame after a reset; None: no restarts.
    origin: Option<u64>,
    /// Scene cuts in the results used.
    cuts: u64,
    /// Whether the two recursions may hold different states. False from a reset to the first
    /// restart that drops a state (the first period after a reset, where both run from the
    /// same frame): there one step serves both, `odd` holding `even`'s tensors.
    apart: bool,
}

impl Staggered {
    /// The next frame through both recursions (each restarted at its frames): the fused frame
    /// and its count from the older one.
    fn step(&mut self, cur: &Tensor, cap: f64) -> Result<(Tensor, Tensor)> {
        if self.origin.is_none() {
            let cuts = self.even.cuts;
            let out = self.even.step(cur, cap)?;
            self.cuts += self.even.cuts - cuts;
            return Ok(out);
        }
        let t = self.next;
        self.next += 1;
        let p = RESTART_PERIOD;
        if t % p == 0 {
            match (t / p) % 2 {
                0 => self.even.reset(),
                _ => self.odd.reset(),
            }
            self.apart |= self.even.state.is_some() || self.odd.state.is_some();
        }
        let cuts = (self.even.cuts, self.odd.cuts);
        let (e, o) = match self.apart {
            // The same state and frame: the same step.
            false => {
                let e = self.even.step(cur, cap)?;
                self.odd.state = self.even.state.as_ref().map(share);
                self.odd.cuts += self.even.cuts - cuts.0;
                let o = (e.0.shallow_clone(), e.1.shallow_clone());
                (e, o)
            }
            // Independent: on two threads where the frames are on the CPU.
            true => {
                let (even, odd) = (&mut self.even, &mut self.odd);
                let (e, o) = both(cur, |cur| even.step(cur, cap), |cur| odd.step(cur, cap));
                (e?, o?)
            }
        };
        // The older one restarted at the start of the previous period.
        Ok(match (t / p) % 2 == 1 || t < p {
            true => {
                self.cuts += self.even.cuts - cuts.0;
                e
            }
            false => {
                self.cuts += self.odd.cuts - cuts.1;
                o
            }
        })
    }

    /// `frames` (`[N, 3, H, W]`) through the recursion frame after frame, in their kind, and
    /// their counts (`[N, 1, H, W]` float).
    fn run(&mut self, frames: &Tensor, cap: f64) -> Result<(Tensor, Tensor)> {
        let n = frames.size()[0];
        let (mut out, mut counts) = (Vec::with_capacity(n as usize), Vec::new());
        for i in 0..n {
            let cur = frames.f_narrow(0, i, 1)?;
            let (f, count) = self.step(&cur, cap)?;
            out.push(f.f_to_kind(cur.kind())?);
            counts.push(count);
        }
        Ok((cat(&out)?, cat(&counts)?))
    }

    fn reset(&mut self) {
        self.even.reset();
        self.odd.reset();
        self.apart = false;
        self.next = self.origin.unwrap_or(0);
    }
}

/// `ts` concatenated along the batch dimension; one tensor is itself, not a copy (the
/// causal stage's usual batch of one frame: a fused frame and its counts copied for nothing
/// before). The stage's results are never written in place, so sharing them is safe.
pub fn cat(ts: &[Tensor]) -> Result<Tensor> {
    match ts {
        [t] => Ok(t.shallow_clone()),
        _ => Ok(Tensor::f_cat(ts, 0)?),
    }
}

/// A state holding `s`'s tensors (a step never writes its state's tensors: it makes new ones).
fn share(s: &fusion::State) -> fusion::State {
    fusion::State {
        frame: s.frame.shallow_clone(),
        luma: s.luma.shallow_clone(),
        count: s.count.shallow_clone(),
    }
}

static THREADS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Whether the temporal stage of every stream in the process may use a second thread for
/// its independent recursions (the default; off: one thread, the same numbers). For
/// measurements (`examples/temporal_offline.rs` compares both).
pub fn set_threads(on: bool) {
    THREADS.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// `a(x)` and `b(x)`, on two threads when `x` is on the CPU (the temporal stage runs in plain
/// Rust on one core there, between the network's calls, which use them all), else one after
/// the other; a panic in either goes on in the caller. Each gets its own handle of `x` (a
/// tensor is not shared between threads).
fn both<A: Send, B: Send>(
    x: &Tensor,
    a: impl FnOnce(&Tensor) -> A + Send,
    b: impl FnOnce(&Tensor) -> B,
) -> (A, B) {
    if x.device() != tch::Device::Cpu || !THREADS.load(std::sync::atomic::Ordering::Relaxed) {
        return (a(x), b(x));
    }
    let xa = x.shallow_clone();
    std::thread::scope(|s| {
        let ta = s.spawn(move || a(&xa));
        let rb = b(x);
        match ta.join() {
            Ok(ra) => (ra, rb),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The temporal filter of one stream: a recursion over the network's input
/// ([`TemporalFilter::prepare`]), then the network's output weighed against that fused input
/// by the frames fused into each pixel ([`TemporalFilter::finish`], [`output`]).
///
/// With a lookahead (offline mode, [`TemporalFilter::set_future`]) the input stage also sees
/// up to that many later frames: a backward recursion over them, combined with the forward
/// one ([`offline::combine`]).
#[derive(Default)]
pub struct TemporalFilter {
    input: Staggered,
    /// Packed frames that follow the next call's frames (offline mode), set by the engine.
    future: Vec<Vec<u8>>,
    /// Later frames each frame looks at (0: causal).
    lookahead: usize,
    /// The per-pixel counts of the last [`TemporalFilter::prepare_window`]'s frames
    /// (`[N, 1, H, W]`), for [`TemporalFilter::finish`]; None after an unfused call.
    counts: Option<Tensor>,
    /// The last call's future, packed and converted, and the format and device it was
    /// converted for ([`TemporalFilter::take_future_frames`]).
    uploaded: Vec<(Vec<u8>, Tensor)>,
    uploaded_as: Option<(crate::frame::FrameFormat, tch::Device)>,
}

impl std::fmt::Debug for TemporalFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TemporalFilter")
            .field("primed", &self.is_primed())
            .field("scene_cuts", &self.scene_cuts())
            .finish()
    }
}

impl TemporalFilter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forget the previous frames (after a flush or seek: the next frame starts afresh).
    pub fn reset(&mut self) {
        self.input.reset();
        self.counts = None;
        self.uploaded.clear();
    }

    /// Whether a previous frame is held.
    pub fn is_primed(&self) -> bool {
        self.input.even.state.is_some() || self.input.odd.state.is_some()
    }

    /// Bytes the state holds (each recursion's last fused frame, its luma and counts; 0 when
    /// not primed; two recursions with restarts, see [`Staggered`], counted twice in their
    /// first period, where they share one), and the last call's future kept packed and
    /// converted ([`TemporalFilter::take_future_frames`]).
    pub fn bytes(&self) -> usize {
        let size = |t: &Tensor| t.numel() * t.kind().elt_size_in_bytes();
        let state: usize = [&self.input.even, &self.input.odd]
            .iter()
            .filter_map(|r| r.state.as_ref())
            .map(|s| {
                [&s.frame, &s.luma, &s.count]
                    .map(size)
                    .iter()
                    .sum::<usize>()
            })
            .sum();
        let uploaded: usize = self.uploaded.iter().map(|(p, t)| p.len() + size(t)).sum();
        state + uploaded
    }

    /// Scene cuts detected so far (each dropped the state).
    pub fn scene_cuts(&self) -> u64 {
        self.input.cuts
    }

    /// Before the first frame: the stream index of the next frame, and of the first one
    /// after each [`TemporalFilter::reset`]; the forward recursion then restarts every
    /// [`RESTART_PERIOD`] frames of the stream ([`Staggered`]), so that a segment of a stream
    /// denoised on its own, its first frame's index set here, gives one pass's frames (0 for
    /// the pass). None (the default): one recursion that never restarts (half the motion
    /// searches).
    pub fn set_origin(&mut self, origin: Option<u64>) {
        self.input.origin = origin;
        self.input.next = origin.unwrap_or(0);
        // Set after frames: `odd` never ran (no origin) or ran apart.
        self.input.apart = self.is_primed();
    }

    /// Offline mode: each frame of the next call also looks at up to `lookahead` later frames,
    /// the call's own and then `future` (packed frames of the call's format that follow it).
    pub fn set_future(&mut self, lookahead: usize, future: Vec<Vec<u8>>) {
        self.lookahead = lookahead;
        self.future = future;
    }

    /// The per-pixel counts of the last [`TemporalFilter::prepare_window`]'s frames
    /// (`[N, 1, H, W]` float), which [`TemporalFilter::finish`] takes; None when it fused
    /// nothing or they were taken.
    pub fn counts(&self) -> Option<&Tensor> {
        self.counts.as_ref()
    }

    /// Later frames each frame looks at (0: causal).
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// The network's input `frames` (`[N, 3, H, W]`, float, 0..1, display order) fused with
    /// the motion-aligned earlier inputs, up to [`cap`] frames; `amount` 0 returns them
    /// unchanged and drops the state.
    pub fn prepare(&mut self, frames: &Tensor, amount: f64) -> Result<Tensor> {
        self.prepare_window(frames, None, amount)
    }

    /// [`TemporalFilter::prepare`] in offline mode: frame `i` is also fused with up to
    /// [`TemporalFilter::lookahead`] frames after it (`frames` after `i`, then `future`,
    /// `[M, 3, H, W]`), by a backward recursion combined with the forward one.
    pub fn prepare_window(
        &mut self,
        frames: &Tensor,
        future: Option<&Tensor>,
        amount: f64,
    ) -> Result<Tensor> {
        let future = match future {
            Some(f) if f.dim() == 4 => (0..f.size()[0])
                .map(|i| f.f_narrow(0, i, 1))
                .collect::<std::result::Result<Vec<_>, _>>()?,
            _ => Vec::new(),
        };
        self.prepare_frames(frames, &future, amount)
    }

    /// [`TemporalFilter::prepare_window`] with the future as single frames (`[1, 3, H, W]`
    /// each; ignored unless all are the size of `frames`' frames).
    pub fn prepare_frames(
        &mut self,
        frames: &Tensor,
        future: &[Tensor],
        amount: f64,
    ) -> Result<Tensor> {
        self.counts = None;
        if amount <= 0.0 || frames.dim() != 4 {
            self.input.reset();
            return Ok(frames.shallow_clone());
        }
        let c = cap(amount);
        if self.lookahead == 0 {
            let (fused, counts) = self.input.run(frames, c)?;
            self.counts = Some(counts);
            return Ok(fused);
        }
        let n = frames.size()[0];
        let one = [&[1][..], &frames.size()[1..]].concat();
        let future = match future.iter().all(|f| f.size() == one) {
            true => future,
            false => &[],
        };
        // Each frame in float once (it goes through up to `lookahead + 1` recursions), none
        // copied into one window tensor.
        let all = (0..n)
            .map(|i| frames.f_narrow(0, i, 1))
            .chain(future.iter().map(|f| Ok(f.shallow_clone())))
            .map(|f| cpu::tensors::floats(&f?))
            .collect::<Result<Vec<_>>>()?;
        let total = all.len();
        let mut out = Vec::with_capacity(n as usize);
        let mut counts = Vec::with_capacity(n as usize);
        for (i, cur) in all.iter().enumerate().take(n as usize) {
            let ahead = self.lookahead.min(total - 1 - i);
            let (y, count) = match ahead {
                0 => self.input.step(cur, c)?,
                _ => {
                    // The forward and the backward recursion on two threads (CPU frames).
                    let input = &mut self.input;
                    let window = &all[i..=i + ahead];
                    let (fwd, bwd) = both(
                        cur,
                        |cur| input.step(cur, c),
                        |_| offline::backward(window, c),
                    );
                    let ((f, nf), (b, nb)) = (fwd?, bwd?);
                    offline::combine_counted(cur, &f, &nf, &b, &nb)?
                }
            };
            out.push(y.f_to_kind(frames.kind())?);
            counts.push(count);
        }
        self.counts = Some(cat(&counts)?);
        cat(&out)
    }

    /// The packed frames [`TemporalFilter::set_future`] left for this call (taken), each as a
    /// `[1, 3, H, W]` tensor on `device` ([`crate::frame::frames_to_tensor`]), for
    /// [`TemporalFilter::prepare_frames`]. Each call's future holds all but the last of the
    /// previous one's frames again: those (the same bytes, format and device) are not
    /// converted again but taken from the previous call's, which this keeps until the next.
    pub fn take_future_frames(
        &mut self,
        fmt: &crate::frame::FrameFormat,
        device: tch::Device,
    ) -> Result<Vec<Tensor>> {
        let future = std::mem::take(&mut self.future);
        let before = std::mem::take(&mut self.uploaded);
        let same = self.uploaded_as == Some((*fmt, device));
        let mut uploaded = Vec::with_capacity(future.len());
        for packed in future {
            let known = before.iter().find(|(p, _)| same && *p == packed);
            let t = match known {
                Some((_, t)) => t.shallow_clone(),
                None => crate::frame::frames_to_tensor(&[&packed], fmt, device)?,
            };
            uploaded.push((packed, t));
        }
        self.uploaded_as = Some((*fmt, device));
        let tensors = uploaded.iter().map(|(_, t)| t.shallow_clone()).collect();
        self.uploaded = uploaded;
        Ok(tensors)
    }

    /// `frames` (packed) as the tensor `[N, 3, H, W]` the last
    /// [`TemporalFilter::take_future_frames`] made of them, when it made each of them for this
    /// format and device (in offline mode a call's frames were the previous call's future):
    /// the engine's upload without converting them again. None when one is missing.
    pub fn converted(
        &self,
        frames: &[&[u8]],
        fmt: &crate::frame::FrameFormat,
        device: tch::Device,
    ) -> Result<Option<Tensor>> {
        if frames.is_empty() || self.uploaded_as != Some((*fmt, device)) {
            return Ok(None);
        }
        let mut found = Vec::with_capacity(frames.len());
        for f in frames {
            match self.uploaded.iter().find(|(p, _)| p.as_slice() == *f) {
                Some((_, t)) => found.push(t.shallow_clone()),
                None => return Ok(None),
            }
        }
        Ok(Some(cat(&found)?))
    }

    /// Frames whose output nobody uses (a segment's warm-up, the frames after its last
    /// output; the element's DECODE_ONLY buffers) through the forward recursion only: the
    /// state after them is what [`TemporalFilter::prepare_window`] leaves (the recursion runs
    /// over the network's input, never its output), without the network, the backward
    /// recursion or the output blend. `amount` 0 drops the state, as there.
    pub fn prime(&mut self, frames: &Tensor, amount: f64) -> Result<()> {
        self.counts = None;
        if amount <= 0.0 || frames.dim() != 4 {
            self.input.reset();
            return Ok(());
        }
        let c = cap(amount);
        let frames = frames.f_to_kind(tch::Kind::Float)?.f_contiguous()?;
        for i in 0..frames.size()[0] {
            let _ = self.input.step(&frames.f_narrow(0, i, 1)?, c)?;
        }
        Ok(())
    }

    /// After the network: its output `out` for the frames of the last
    /// [`TemporalFilter::prepare_window`] weighed against their fused input `fused` (what that
    /// call returned) by the frames fused into each pixel ([`output::blend`]): the network's
    /// own result where nothing was fused. `out` itself when the last call fused nothing
    /// (`amount` 0) or the sizes differ.
    pub fn finish(&mut self, fused: &Tensor, out: &Tensor) -> Result<Tensor> {
        match self.counts.take() {
            Some(n) if n.size()[0] == out.size()[0] && out.size() == fused.size() => {
                Ok(output::blend(out, fused, &n)?.f_to_kind(out.kind())?)
            }
            _ => Ok(out.shallow_clone()),
        }
    }
}
