//! One model for many streams: a process-wide model host.
//!
//! [`spawn_shared`](super::spawn_shared) gives every stream its own engine (its own channel,
//! batching, order, flushing epochs, temporal filter and counters) whose model is a
//! [`SharedModel`]: a handle that sends each batch to the one host thread that loaded and owns
//! the model for that key (model, device, precision, pixel budget, threads). The host runs
//! what several streams sent meanwhile as one network call when they share a frame format and
//! fit in one batch ([`Denoiser::denoise_groups`]): on a GPU, several cameras fill a batch
//! together; on the CPU (batch 1) they take turns. A flush on one stream interrupts the host
//! only when every stream of the running call is flushed.
//!
//! The registry holds hosts weakly: the last stream to stop drops its host, and with it the
//! model (on the host thread, as always).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crossbeam_channel as cb;
use tch::Device;

use super::exit_guard::{self, GUARD};
use super::stats::{Queue, StatsAcc};
use super::{load_model, FrameModel};
use crate::auto_precision::PrecisionChoice;
use crate::error::{Error, Result};
use crate::frame::FrameFormat;
use crate::inference::{Denoiser, FrameGroup, Interrupt, Options, Precision, StageTimes};
use crate::model::Config;
use crate::temporal::TemporalFilter;
use crate::weights::Provenance;

/// What makes two streams' models the same: they share a host only when all of it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostKey {
    /// The model as resolved (a path, or the built-in default).
    pub model: String,
    pub device: Device,
    pub precision: Precision,
    /// The requested pixel budget (before `auto` is resolved).
    pub max_pixels: i64,
    /// The stream's batch size (an `auto` pixel budget depends on it).
    pub batch_size: usize,
    pub cpu_threads: usize,
    pub coarse_grain: bool,
    /// The refinement after the network, as written (`Refine`'s Display).
    pub refine: String,
}

impl HostKey {
    /// The key of `model` (as resolved) loaded with `opts` for batches of `batch_size`.
    pub fn new(model: String, opts: &Options, batch_size: usize) -> HostKey {
        HostKey {
            model,
            device: opts.device,
            precision: opts.precision,
            max_pixels: opts.max_pixels,
            batch_size,
            cpu_threads: opts.cpu_threads,
            coarse_grain: opts.coarse_grain,
            refine: opts.refine.to_string(),
        }
    }
}

/// Which host a stream's engine uses, and how many streams use it now (`stats` shows both).
#[derive(Debug, Clone)]
pub struct Sharing {
    /// Process-unique number of the host: streams with the same id share one model.
    pub id: u64,
    streams: Arc<AtomicUsize>,
    /// The counters of the engines on it: what each has for the model, so that each predicts
    /// its wait behind the others' frames too ([`super::EngineControl::wait_estimate`]).
    members: Arc<Mutex<Vec<Weak<Mutex<StatsAcc>>>>>,
}

impl Default for Sharing {
    fn default() -> Self {
        Self::new()
    }
}

impl Sharing {
    /// A new identity for one model that several engines use: a [`FrameModel`] that runs
    /// every engine's batches in the order they come, one at a time, returns (clones of) it
    /// from [`FrameModel::sharing`]. [`SharedModel`] does; a test model may too.
    pub fn new() -> Sharing {
        Sharing {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            streams: Arc::default(),
            members: Arc::default(),
        }
    }

    /// Streams whose engines run on this host now.
    pub fn streams(&self) -> usize {
        self.streams.load(Ordering::Relaxed)
    }

    /// An engine on this model: its counters join the others'.
    pub(super) fn join(&self, stats: &Arc<Mutex<StatsAcc>>) {
        let mut members = lock(&self.members);
        members.retain(|m| m.strong_count() > 0);
        members.push(Arc::downgrade(stats));
    }

    /// What the engines on this model other than the one of `own` have for it now.
    pub(super) fn other_queues(&self, own: &Arc<Mutex<StatsAcc>>) -> Vec<Queue> {
        lock(&self.members)
            .iter()
            .filter_map(Weak::upgrade)
            .filter(|m| !Arc::ptr_eq(m, own))
            .map(|m| lock(&m).queue())
            .collect()
    }
}

/// One batch of one stream, on its way to the host.
struct Job {
    frames: Vec<Vec<u8>>,
    format: FrameFormat,
    strength: f64,
    /// The stream's filter travels with the job and comes back with the reply.
    temporal: Option<(TemporalFilter, f64)>,
    /// Most frames a call that includes this job may hold.
    max_batch: usize,
    interrupt: Option<Interrupt>,
    reply: cb::Sender<Reply>,
}

impl Job {
    fn interrupted(&self) -> bool {
        self.interrupt.as_ref().is_some_and(|stop| stop())
    }
}

type Reply = (Result<(Vec<Vec<u8>>, StageTimes)>, Option<TemporalFilter>);

/// What the model the host loaded is.
#[derive(Debug, Clone)]
struct ModelFacts {
    config: Config,
    provenance: Provenance,
    device: Device,
    max_pixels: i64,
    /// How the precision came about; `auto` on the CPU chooses at the first call's size.
    choice: Arc<Mutex<PrecisionChoice>>,
}

/// A running host: the job channel (its thread ends when the last handle is dropped).
struct Host {
    /// None once dropping: that ends the host thread.
    jobs: Option<cb::Sender<Job>>,
    facts: ModelFacts,
    sharing: Sharing,
    /// Disconnected when the host thread has ended; and its handle.
    done: cb::Receiver<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Longest the last stream waits for the host thread to unload the model and end.
const HOST_JOIN: Duration = Duration::from_secs(10);

impl Drop for Host {
    /// The last stream is gone: end the host thread and join it (bounded), so that no thread
    /// holding libtorch state (the model, its OpenMP team) outlives the elements that used it,
    /// as the unshared worker never did.
    fn drop(&mut self) {
        self.jobs = None;
        if let Err(cb::RecvTimeoutError::Timeout) = self.done.recv_timeout(HOST_JOIN) {
            return;
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

static HOSTS: Mutex<Option<HashMap<HostKey, Weak<Host>>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Time between two looks at a stream's interrupt while its job waits for the host.
const INTERRUPT_POLL: Duration = Duration::from_millis(10);

/// A stream's handle on a shared model: a [`FrameModel`] whose calls run on the host thread.
pub struct SharedModel {
    host: Arc<Host>,
    interrupt: Option<Interrupt>,
    max_batch: usize,
}

impl Drop for SharedModel {
    fn drop(&mut self) {
        self.host.sharing.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl SharedModel {
    /// The host for `key`, started with the model `load` returns (on the host thread) when
    /// none runs. `max_batch` bounds the calls this stream's jobs take part in.
    pub fn attach<F>(key: HostKey, max_batch: usize, load: F) -> Result<SharedModel>
    where
        F: FnOnce() -> Result<Denoiser> + Send + 'static,
    {
        let mut hosts = HOSTS.lock().unwrap_or_else(|e| e.into_inner());
        let hosts = hosts.get_or_insert_with(HashMap::new);
        hosts.retain(|_, h| h.strong_count() > 0);
        let host = match hosts.get(&key).and_then(Weak::upgrade) {
            Some(h) => h,
            None => {
                // Loading under the registry lock: a second stream of the same model waits
                // for this load instead of starting its own.
                let h = Arc::new(start_host(load)?);
                hosts.insert(key, Arc::downgrade(&h));
                h
            }
        };
        host.sharing.streams.fetch_add(1, Ordering::Relaxed);
        Ok(SharedModel {
            host,
            interrupt: None,
            max_batch: max_batch.max(1),
        })
    }

    fn run(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
        temporal: Option<(&mut TemporalFilter, f64)>,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        let stopped = || self.interrupt.as_ref().is_some_and(|stop| stop());
        if stopped() {
            return Err(Error::Interrupted);
        }
        let (reply_tx, reply_rx) = cb::bounded(1);
        let (mut filter, amount) = match temporal {
            Some((f, a)) => (Some(f), a),
            None => (None, 0.0),
        };
        let job = Job {
            frames: frames.iter().map(|f| f.to_vec()).collect(),
            format: *format,
            strength,
            temporal: filter.as_mut().map(|f| (std::mem::take(&mut **f), amount)),
            max_batch: self.max_batch,
            interrupt: self.interrupt.clone(),
            reply: reply_tx,
        };
        self.host
            .jobs
            .as_ref()
            .ok_or(Error::WorkerGone)?
            .send(job)
            .map_err(|_| Error::WorkerGone)?;
        loop {
            match reply_rx.recv_timeout(INTERRUPT_POLL) {
                Ok((result, back)) => {
                    if let (Some(f), Some(back)) = (filter, back) {
                        *f = back;
                    }
                    return result;
                }
                // The host drops the reply of a job it finds interrupted; the worker resets
                // the stream's filter after any failed call.
                Err(cb::RecvTimeoutError::Timeout) if !stopped() => {}
                Err(cb::RecvTimeoutError::Timeout) => return Err(Error::Interrupted),
                Err(cb::RecvTimeoutError::Disconnected) => {
                    return Err(if stopped() {
                        Error::Interrupted
                    } else {
                        Error::WorkerGone
                    })
                }
            }
        }
    }
}

impl FrameModel for SharedModel {
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.run(frames, format, strength, None)
    }
    fn denoise_sequence(
        &self,
        frames: &[&[u8]],
        format: &FrameFormat,
        strength: f64,
        temporal: &mut TemporalFilter,
        amount: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        self.run(frames, format, strength, Some((temporal, amount)))
    }
    fn config(&self) -> &Config {
        &self.host.facts.config
    }
    fn provenance(&self) -> &Provenance {
        &self.host.facts.provenance
    }
    fn device(&self) -> Device {
        self.host.facts.device
    }
    fn precision(&self) -> Precision {
        lock(&self.host.facts.choice).precision
    }
    fn precision_choice(&self) -> PrecisionChoice {
        lock(&self.host.facts.choice).clone()
    }
    fn max_pixels(&self) -> i64 {
        self.host.facts.max_pixels
    }
    fn set_interrupt(&mut self, interrupt: Interrupt) {
        self.interrupt = Some(interrupt);
    }
    fn sharing(&self) -> Option<Sharing> {
        Some(self.host.sharing.clone())
    }
}

/// Start a host thread on the model `load` returns; a loading failure is returned here.
fn start_host<F>(load: F) -> Result<Host>
where
    F: FnOnce() -> Result<Denoiser> + Send + 'static,
{
    let (jobs_tx, jobs_rx) = cb::unbounded::<Job>();
    let (ready_tx, ready_rx) = cb::bounded::<Result<ModelFacts>>(1);
    let (done_tx, done_rx) = cb::bounded::<()>(0);
    let thread = std::thread::Builder::new()
        .name("clipdenoise-model".into())
        .spawn(move || {
            let _done = done_tx;
            exit_guard::install();
            let Some(loading) = GUARD.enter() else {
                let _ = ready_tx.send(Err(Error::Interrupted));
                return;
            };
            let model = load_model(load);
            drop(loading);
            let mut model = match model {
                Ok(m) => m,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let facts = ModelFacts {
                config: model.config().clone(),
                provenance: model.provenance().clone(),
                device: model.device(),
                max_pixels: model.options().max_pixels,
                choice: Arc::new(Mutex::new(model.precision_choice().clone())),
            };
            let choice = facts.choice.clone();
            let running: Arc<Mutex<Vec<Interrupt>>> = Arc::default();
            let seen = running.clone();
            // Stop a call only when every stream in it was flushed (or the process exits).
            model.set_interrupt(Arc::new(move || {
                let calls = seen.lock().unwrap_or_else(|e| e.into_inner());
                GUARD.exiting() || (!calls.is_empty() && calls.iter().all(|stop| stop()))
            }));
            if ready_tx.send(Ok(facts)).is_ok() {
                serve(&mut model, &jobs_rx, &running, &choice);
            }
            // Jobs still queued carry streams' temporal filters (tensors): they go with the
            // model, under a token, or are left alone when the process is exiting.
            match GUARD.enter() {
                Some(_busy) => drop((model, jobs_rx)),
                None => std::mem::forget((model, jobs_rx)),
            }
        })
        .map_err(|e| Error::Input(format!("cannot start the model host thread: {e}")))?;
    let facts = ready_rx.recv().unwrap_or(Err(Error::WorkerGone))?;
    Ok(Host {
        jobs: Some(jobs_tx),
        facts,
        done: done_rx,
        thread: Some(thread),
        sharing: Sharing::new(),
    })
}

/// Run jobs until every handle is gone: each call takes the oldest job and the jobs queued
/// behind it of the same format, as long as they fit the smallest batch bound among them.
fn serve(
    model: &mut Denoiser,
    jobs: &cb::Receiver<Job>,
    running: &Mutex<Vec<Interrupt>>,
    choice: &Mutex<PrecisionChoice>,
) {
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(j) => j,
            None => match jobs.recv() {
                Ok(j) => j,
                Err(_) => return,
            },
        };
        let mut call = vec![first];
        let mut bound = call[0].max_batch;
        let mut frames = call[0].frames.len();
        while let Ok(next) = jobs.try_recv() {
            let fits = frames + next.frames.len() <= bound.min(next.max_batch);
            if next.format != call[0].format || !fits {
                held = Some(next);
                break;
            }
            bound = bound.min(next.max_batch);
            frames += next.frames.len();
            call.push(next);
        }
        // Jobs hold tensors (temporal filters): every drop of one is libtorch work, so it
        // happens under a token; once the process is exiting they are left alone.
        let Some(_busy) = GUARD.enter() else {
            std::mem::forget((call, held));
            return;
        };
        // A job whose stream was flushed meanwhile is dropped unanswered.
        call.retain(|j| !j.interrupted());
        if call.is_empty() {
            continue;
        }
        // `auto`: choose on the first size (a failure leaves fp32, said in the choice).
        let (w, h) = (call[0].format.width as i64, call[0].format.height as i64);
        if let Ok(Some(_)) | Err(_) = model.resolve_auto(w, h) {
            *lock(choice) = model.precision_choice().clone();
        }
        *running.lock().unwrap_or_else(|e| e.into_inner()) =
            call.iter().filter_map(|j| j.interrupt.clone()).collect();
        run_call(model, call);
        running.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// One network call on the jobs of `call` (one format); each gets its own frames back.
fn run_call(model: &Denoiser, mut call: Vec<Job>) {
    let format = call[0].format;
    let mut filters: Vec<Option<(TemporalFilter, f64)>> =
        call.iter_mut().map(|j| j.temporal.take()).collect();
    let refs: Vec<Vec<&[u8]>> = call
        .iter()
        .map(|j| j.frames.iter().map(Vec::as_slice).collect())
        .collect();
    let result = {
        let mut groups: Vec<FrameGroup<'_>> = call
            .iter()
            .zip(&refs)
            .zip(filters.iter_mut())
            .map(|((j, frames), f)| FrameGroup {
                frames,
                strength: j.strength,
                temporal: f.as_mut().map(|(f, a)| (f, *a)),
            })
            .collect();
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.denoise_groups(&format, &mut groups)
        }))
        .unwrap_or_else(|p| {
            Err(Error::Torch(format!(
                "the model panicked: {}",
                super::panic_text(&p)
            )))
        })
    };
    drop(refs);
    match result {
        Ok((outs, times)) => {
            for ((job, out), filter) in call.into_iter().zip(outs).zip(filters) {
                let _ = job.reply.send((Ok((out, times)), filter.map(|(f, _)| f)));
            }
        }
        Err(e) => {
            let text = e.to_string();
            for job in call {
                let err = match &e {
                    Error::Interrupted => Error::Interrupted,
                    _ => Error::Torch(text.clone()),
                };
                let _ = job.reply.send((Err(err), None));
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
