//! The engine on a fake model (every byte inverted, blended by the strength; optionally
//! failing), and on the real [`Denoiser`] where the output or the loading is what is tested.

use super::*;
use crate::frame::PixelFormat;
use crate::inference::FrameGroup;
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;

fn fixture() -> ModelSource {
    ModelSource::File(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/tiny-w8/official_state_dict.safetensors"),
    )
}

/// A stand-in model: `out = in + strength * (255 - 2 * in)` (the inverted frame at strength
/// 1); every batch fails once `fail_after` frames went through it.
struct Fake {
    config: Config,
    provenance: Provenance,
    fail_after: Option<u64>,
    frames_run: Cell<u64>,
}

impl Fake {
    fn new(fail_after: Option<u64>) -> Self {
        Fake {
            config: Config::preset("nano").unwrap(),
            provenance: Provenance::default(),
            fail_after,
            frames_run: Cell::new(0),
        }
    }
}

impl FrameModel for Fake {
    fn denoise_batch(
        &self,
        frames: &[&[u8]],
        _format: &FrameFormat,
        strength: f64,
    ) -> Result<(Vec<Vec<u8>>, StageTimes)> {
        let start = Instant::now();
        let done = self
            .frames_run
            .replace(self.frames_run.get() + frames.len() as u64);
        if self.fail_after.is_some_and(|limit| done >= limit) {
            return Err(Error::Torch("injected failure (fake model)".into()));
        }
        let out = frames
            .iter()
            .map(|f| {
                f.iter()
                    .map(|&b| (b as f64 + strength * (255.0 - 2.0 * b as f64)).round() as u8)
                    .collect()
            })
            .collect();
        let stages = StageTimes {
            model: start.elapsed(),
            ..StageTimes::default()
        };
        Ok((out, stages))
    }
    fn config(&self) -> &Config {
        &self.config
    }
    fn provenance(&self) -> &Provenance {
        &self.provenance
    }
    fn device(&self) -> Device {
        Device::Cpu
    }
    fn precision(&self) -> Precision {
        Precision::Fp32
    }
}

fn cfg(batch_size: usize, max_latency_ms: u64, queue_size: usize) -> EngineConfig {
    EngineConfig {
        batch_size,
        max_latency: Duration::from_millis(max_latency_ms),
        queue_size,
        ..Default::default()
    }
}

/// An engine on the fake model.
fn start(c: EngineConfig) -> (EngineSender<usize>, EngineReceiver<usize>) {
    start_fake(c, None)
}

fn start_fake(
    c: EngineConfig,
    fail_after: Option<u64>,
) -> (EngineSender<usize>, EngineReceiver<usize>) {
    spawn_with("fake".into(), move || Ok(Fake::new(fail_after)), c).expect("engine starts")
}

/// An engine on the real model.
fn start_real(c: EngineConfig) -> (EngineSender<usize>, EngineReceiver<usize>) {
    spawn(fixture(), Options::default(), c).expect("engine starts")
}

fn fmt(w: usize, h: usize) -> FrameFormat {
    FrameFormat::new(PixelFormat::Rgb, w, h)
}

fn frame(f: &FrameFormat, seed: usize) -> Vec<u8> {
    (0..f.frame_len())
        .map(|i| ((i * 31 + seed * 97 + (i / 5) * 13) % 251) as u8)
        .collect()
}

const T: Duration = Duration::from_secs(20);

fn next_frame(rx: &EngineReceiver<usize>) -> DenoisedFrame<usize> {
    match rx.recv_timeout(T) {
        Ok(Output::Frame(f)) => f,
        Ok(Output::Marker(m)) => panic!("marker {m} where a frame was expected"),
        Ok(Output::Failed { error, .. }) => panic!("failed: {error}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn order_is_kept_and_output_matches_the_denoiser() {
    let (tx, rx) = start_real(cfg(4, 60_000, 16));
    let f = fmt(24, 16);
    let frames: Vec<Vec<u8>> = (0..10).map(|i| frame(&f, i)).collect();
    for (i, d) in frames.iter().enumerate() {
        tx.send(d.clone(), f, i).unwrap();
    }
    drop(tx);
    let outs: Vec<DenoisedFrame<usize>> = (0..10).map(|_| next_frame(&rx)).collect();
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
    assert_eq!(
        outs.iter().map(|o| o.payload).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(
        outs.iter()
            .map(|o| o.timing.batch_frames)
            .collect::<Vec<_>>(),
        [4, 4, 4, 4, 4, 4, 4, 4, 2, 2]
    );

    // Same batches through the core API directly: identical bytes.
    let d = Denoiser::new(fixture().load(Device::Cpu).unwrap(), Options::default()).unwrap();
    for chunk in [0..4, 4..8, 8..10] {
        let refs: Vec<&[u8]> = frames[chunk.clone()].iter().map(|v| v.as_slice()).collect();
        let want = d.denoise_frames(&refs, &f, 1.0).unwrap();
        for (i, w) in chunk.zip(want) {
            assert!(
                outs[i].data == w,
                "frame {i} differs from Denoiser::denoise_frames"
            );
        }
    }
    let s = rx.control().stats();
    assert_eq!(
        (s.frames_in, s.frames_out, s.frames_dropped, s.batches),
        (10, 10, 0, 3)
    );
    assert!((s.mean_batch_size - 10.0 / 3.0).abs() < 1e-9);
    assert!(s.model_ms_per_frame > 0.0 && s.p99_latency_ms >= s.mean_latency_ms * 0.5);
    assert!(rx.control().join_timeout(Duration::from_secs(5)));
    assert!(!rx.control().is_running());
}

#[test]
fn partial_batch_runs_after_max_latency() {
    let (tx, rx) = start(cfg(8, 150, 16));
    let f = fmt(16, 16);
    let t0 = Instant::now();
    for i in 0..3 {
        tx.send(frame(&f, i), f, i).unwrap();
    }
    let outs: Vec<_> = (0..3).map(|_| next_frame(&rx)).collect();
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(150),
        "ran before max-latency: {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(outs.iter().all(|o| o.timing.batch_frames == 3));
    assert!(outs[0].timing.queue_wait >= Duration::from_millis(150));
    // The sender is still alive: the worker did not wait for more frames.
    drop(tx);
}

#[test]
fn drain_runs_the_partial_batch_and_markers_keep_their_place() {
    let (tx, rx) = start(cfg(8, 3_600_000, 16));
    let f = fmt(16, 8);
    tx.send(frame(&f, 0), f, 0).unwrap();
    tx.marker(100).unwrap();
    tx.send(frame(&f, 1), f, 1).unwrap();
    tx.drain(101).unwrap();
    let t0 = Instant::now();
    let a = next_frame(&rx);
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(100))));
    let b = next_frame(&rx);
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(101))));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!((a.payload, b.payload), (0, 1));
    // One batch: the plain marker did not cut it.
    assert_eq!((a.timing.batch_frames, b.timing.batch_frames), (2, 2));
    // A marker with nothing pending comes out at once.
    tx.marker(102).unwrap();
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(102))));
}

#[test]
fn format_change_runs_the_batch() {
    let (tx, rx) = start(cfg(4, 3_600_000, 16));
    let (f1, f2) = (fmt(16, 16), FrameFormat::new(PixelFormat::I420, 10, 6));
    tx.send(frame(&f1, 0), f1, 0).unwrap();
    tx.send(frame(&f1, 1), f1, 1).unwrap();
    tx.send(frame(&f2, 2), f2, 2).unwrap();
    drop(tx);
    let outs: Vec<_> = (0..3).map(|_| next_frame(&rx)).collect();
    assert_eq!(
        outs.iter()
            .map(|o| o.timing.batch_frames)
            .collect::<Vec<_>>(),
        [2, 2, 1]
    );
    assert_eq!(outs[2].format, f2);
    assert_eq!(outs[2].data.len(), f2.frame_len());
}

#[test]
fn flush_discards_pending_and_resets() {
    let (tx, rx) = start(cfg(8, 3_600_000, 16));
    let f = fmt(16, 16);
    for i in 0..3 {
        tx.send(frame(&f, i), f, i).unwrap();
    }
    let ctl = tx.control().clone();
    ctl.flush_start();
    assert!(matches!(
        tx.send(frame(&f, 9), f, 9),
        Err(SendError::Flushing)
    ));
    assert!(matches!(tx.marker(9), Err(SendError::Flushing)));
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Flushing);
    ctl.flush_stop();
    tx.send(frame(&f, 99), f, 99).unwrap();
    tx.drain(1000).unwrap();
    let out = next_frame(&rx);
    assert_eq!(out.payload, 99);
    assert_eq!(out.timing.batch_frames, 1);
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(1000))));
    let s = ctl.stats();
    assert_eq!((s.frames_in, s.frames_out, s.frames_dropped), (4, 1, 3));
}

#[test]
fn flush_unblocks_a_full_queue_and_a_waiting_receiver() {
    let (tx, rx) = start(cfg(1, 0, 1));
    let f = fmt(8, 8);
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (tx, sent) = (tx.clone(), sent.clone());
        std::thread::spawn(move || loop {
            let i = sent.load(Ordering::SeqCst);
            match tx.send(frame(&f, i), f, i) {
                Ok(()) => sent.fetch_add(1, Ordering::SeqCst),
                Err(e) => return e,
            };
        })
    };
    // Nobody receives: the output channel fills, then the input, then the producer blocks.
    let mut last = usize::MAX;
    while sent.load(Ordering::SeqCst) != last {
        last = sent.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(last <= 5, "queue not bounded: {last} frames accepted");
    let t0 = Instant::now();
    tx.control().flush_start();
    let err = producer.join().unwrap();
    assert!(matches!(err, SendError::Flushing), "{err:?}");
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert_eq!(rx.recv().unwrap_err(), RecvError::Flushing);

    // A receiver blocked on an empty channel wakes up too.
    tx.control().flush_stop();
    let waiter = {
        let rx = rx.clone();
        std::thread::spawn(move || rx.recv().map(|_| ()))
    };
    std::thread::sleep(Duration::from_millis(100));
    tx.control().flush_start();
    assert_eq!(waiter.join().unwrap().unwrap_err(), RecvError::Flushing);
}

#[test]
fn a_full_queue_blocks_the_producer() {
    let (tx, rx) = start(cfg(2, 0, 3));
    let f = fmt(8, 8);
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = {
        let (tx, sent) = (tx.clone(), sent.clone());
        std::thread::spawn(move || {
            for i in 0..40 {
                tx.send(frame(&f, i), f, i).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    std::thread::sleep(Duration::from_millis(800));
    // Input (3) + output (3) + a batch in hand (2) + one being moved: far below 40.
    let held = sent.load(Ordering::SeqCst);
    assert!(held < 12, "{held} frames accepted without a consumer");
    assert!(!producer.is_finished());
    drop(tx);
    let got: Vec<usize> = (0..40).map(|_| next_frame(&rx).payload).collect();
    assert_eq!(got, (0..40).collect::<Vec<_>>());
    producer.join().unwrap();
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
}

#[test]
fn model_errors_come_out_as_items() {
    let (tx, rx) = start_fake(cfg(2, 3_600_000, 8), Some(2));
    let f = fmt(8, 8);
    for i in 0..5 {
        tx.send(frame(&f, i), f, i).unwrap();
    }
    tx.drain(77).unwrap();
    assert_eq!(next_frame(&rx).payload, 0);
    assert_eq!(next_frame(&rx).payload, 1);
    match rx.recv_timeout(T) {
        Ok(Output::Failed { error, payloads }) => {
            assert_eq!(payloads, [2, 3]);
            assert!(error.to_string().contains("injected"), "{error}");
        }
        _ => panic!("expected a failure"),
    }
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Failed { payloads, .. }) if payloads == [4]));
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(77))));
    drop(tx);
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
    let s = rx.control().stats();
    assert_eq!(
        (s.frames_out, s.frames_dropped, s.failed_batches, s.batches),
        (2, 3, 2, 3)
    );
}

#[test]
fn loading_failures_are_reported_by_spawn() {
    let missing = ModelSource::File(PathBuf::from("/nonexistent/model.safetensors"));
    let err = spawn::<()>(missing, Options::default(), EngineConfig::default()).unwrap_err();
    assert!(
        err.to_string().contains("/nonexistent/model.safetensors"),
        "{err}"
    );
    let fp16 = Options {
        precision: Precision::Fp16,
        ..Default::default()
    };
    assert!(spawn::<()>(fixture(), fp16, EngineConfig::default()).is_err());
    if !tch::Cuda::is_available() {
        let cuda = Options {
            device: Device::Cuda(0),
            ..Default::default()
        };
        assert!(spawn::<()>(fixture(), cuda, EngineConfig::default()).is_err());
    }
    let bad = EngineConfig {
        batch_size: 0,
        ..Default::default()
    };
    assert!(spawn::<()>(fixture(), Options::default(), bad).is_err());
    let (tx, _rx) = start_real(cfg(1, 0, 1));
    let err = tx.send(vec![0; 5], fmt(4, 4), 0).unwrap_err();
    assert!(matches!(err, SendError::Invalid(_)), "{err}");
}

#[test]
fn dropping_the_sender_ends_the_worker() {
    let (tx, rx) = start(cfg(4, 3_600_000, 4));
    let f = fmt(8, 8);
    tx.send(frame(&f, 0), f, 0).unwrap();
    let ctl = tx.control().clone();
    assert!(ctl.is_running());
    drop(tx);
    assert_eq!(next_frame(&rx).payload, 0);
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
    assert!(ctl.join_timeout(Duration::from_secs(5)));
    assert!(!ctl.is_running());

    // Dropping the receivers ends it too, even with outputs nobody will take.
    let (tx, rx) = start(cfg(1, 0, 1));
    let ctl = tx.control().clone();
    drop(rx);
    tx.send(frame(&f, 0), f, 0).unwrap();
    let _ = tx.send(frame(&f, 1), f, 1);
    assert!(ctl.join_timeout(Duration::from_secs(5)));
    assert!(matches!(
        tx.send(frame(&f, 2), f, 2),
        Err(SendError::Stopped)
    ));
}

#[test]
fn strength_zero_returns_the_input_and_changes_while_running() {
    let strength = Strength::new(0.0);
    let (tx, rx) = start(EngineConfig {
        strength: strength.clone(),
        ..cfg(1, 0, 4)
    });
    let f = fmt(12, 8);
    let input = frame(&f, 3);
    tx.send(input.clone(), f, 0).unwrap();
    assert!(next_frame(&rx).data == input);
    // The first batch of a format is a warm-up: no batch time estimate from it.
    assert!(rx.control().batch_time_estimate(4).is_none());
    strength.set(1.0);
    assert_eq!(rx.control().strength().get(), 1.0);
    tx.send(input.clone(), f, 1).unwrap();
    assert!(next_frame(&rx).data != input);
    assert!(rx.control().batch_time_estimate(4).is_some());
    strength.set(7.0);
    assert_eq!(strength.get(), 1.0);
}

/// Issue 26: frames the model finished but the receiver has not taken yet (a syncing sink
/// holds the element's src task) are in flight, not a backlog of the model: the expected wait
/// for the model ignores them, and counts the frames that still wait for it. The latency is
/// taken to the end of a frame's batch, not to the receiver.
#[test]
fn finished_frames_waiting_for_the_receiver_are_no_backlog() {
    let (tx, rx) = start(cfg(1, 0, 8));
    let ctl = rx.control().clone();
    let f = fmt(12, 8);
    // Two batches: the first of a format is a warm-up, the second gives the estimate.
    for i in 0..2 {
        tx.send(frame(&f, i), f, i).unwrap();
        next_frame(&rx);
    }
    for i in 2..5 {
        tx.send(frame(&f, i), f, i).unwrap();
    }
    let deadline = Instant::now() + T;
    while ctl.stats().batches < 5 {
        assert!(Instant::now() < deadline, "watchdog: {:?}", ctl.stats());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Let the receiver wait a while: that is not the engine's latency.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(ctl.in_flight(), 3);
    assert_eq!(ctl.wait_estimate(1), Some(Duration::ZERO));
    for _ in 2..5 {
        next_frame(&rx);
    }
    let s = ctl.stats();
    assert!(
        s.mean_latency_ms < 150.0,
        "latency counted the receiver's wait: {s:?}"
    );
    assert_eq!(ctl.in_flight(), 0);
}

/// The expected wait grows with every frame queued before the model: the batch time per
/// frame ahead.
#[test]
fn the_wait_estimate_counts_frames_queued_for_the_model() {
    let stats = control::Shared::new::<usize>(Strength::default(), cb::never(), cb::bounded(1).1);
    let mut s = stats.stats();
    assert_eq!(s.wait_estimate(1, &[]), Some(Duration::ZERO), "idle");
    s.set_running(Some((Instant::now(), 1)));
    assert_eq!(
        s.wait_estimate(1, &[]),
        Some(Duration::ZERO),
        "the first behind the warm-up"
    );
    s.waiting = 1;
    assert_eq!(s.wait_estimate(1, &[]), None, "busy, no batch time known");
    s.waiting = 0;
    s.set_running(None);
    s.warmed_up(Duration::from_millis(10));
    assert_eq!(s.wait_estimate(1, &[]), Some(Duration::ZERO));
    s.waiting = 3;
    assert_eq!(s.wait_estimate(1, &[]), Some(Duration::from_millis(30)));
    // Batches of 4: the three join the partial batch waiting.
    assert_eq!(s.wait_estimate(4, &[]), Some(Duration::ZERO));
    s.set_running(Some((Instant::now(), 1)));
    let w = s.wait_estimate(1, &[]).unwrap();
    assert!(
        w > Duration::from_millis(30) && w <= Duration::from_millis(40),
        "{w:?}"
    );
    s.unqueue(5);
    s.set_running(None);
    assert_eq!(s.wait_estimate(1, &[]), Some(Duration::ZERO));
}

/// Issue 26: a warm-up says when it is over (the element's READY->PAUSED waits for it), and
/// the batch time estimate exists from then on; nothing comes out of it.
#[test]
fn a_warm_up_says_when_it_is_over() {
    let (tx, rx) = start(cfg(1, 0, 8));
    let f = fmt(12, 8);
    assert!(rx.control().batch_time_estimate(1).is_none());
    assert!(tx.warm_up(f).unwrap().wait(T), "watchdog: warm-up not over");
    let s = rx.control().stats();
    assert!(s.warm_up_ms > 0.0, "{s:?}");
    assert!(rx.control().batch_time_estimate(1).is_some());
    assert_eq!(
        rx.control().wait_estimate(1),
        Some(Duration::ZERO),
        "idle again"
    );
    tx.send(frame(&f, 0), f, 0).unwrap();
    assert_eq!(
        next_frame(&rx).payload,
        0,
        "the first frame, not the warm-up's"
    );
}

/// Issue 26: the wait on a shared model counts the other streams' jobs at the model (in the
/// order they came) and the turns they take before the frame.
#[test]
fn the_wait_on_a_shared_model_counts_the_other_streams() {
    use super::stats::{wait_ahead, Queue};
    let ms = Duration::from_millis;
    let (pf, t0) = (ms(10), Instant::now());
    let now = t0 + ms(4);
    let idle = Queue::default();
    let job = |at: u64, waiting: u64| Queue {
        running: Some((t0 + ms(at), 1)),
        waiting,
        last_end: None,
    };
    // A model of its own: what is left of the running batch.
    assert_eq!(wait_ahead(pf, 1, &job(0, 0), &[], now), ms(6));
    // Another stream's job runs, this one has none: the frame waits for it.
    assert_eq!(wait_ahead(pf, 1, &idle, &[job(0, 0)], now), ms(6));
    // This stream's job runs, the other's is queued behind it with a frame waiting: the
    // queued job runs before the frame, the waiting frame after (sent when its job returns,
    // after this stream sent the frame).
    assert_eq!(wait_ahead(pf, 1, &job(0, 0), &[job(1, 1)], now), ms(6 + 10));
    // The other's job runs, this stream's is queued behind it: the other's waiting frame is
    // sent when its job returns, before this stream's job returns: one more batch.
    assert_eq!(
        wait_ahead(pf, 1, &job(1, 0), &[job(0, 1)], now),
        ms(6 + 10 + 10)
    );
    // Its own full batches waiting, and a turn of the other stream for each.
    assert_eq!(
        wait_ahead(pf, 1, &job(0, 2), &[job(1, 5)], now),
        ms(6 + 10 + 20 + 20)
    );
    // A job sent while the call before it ran could only start when that call ended.
    let late_start = Queue {
        last_end: Some(t0 + ms(3)),
        ..job(0, 0)
    };
    assert_eq!(wait_ahead(pf, 1, &idle, &[late_start], now), ms(9));
}

/// An engine on the process's shared model for the fixture; `key` (the pixel budget, far
/// above the frames used) keeps each test's host apart from the others'.
fn start_shared(c: EngineConfig, key: i64) -> (EngineSender<usize>, EngineReceiver<usize>) {
    let opts = Options {
        max_pixels: key,
        ..Options::default()
    };
    spawn_shared(fixture(), opts, c).expect("shared engine starts")
}

fn sharing(rx: &EngineReceiver<usize>) -> Sharing {
    rx.control()
        .info()
        .sharing
        .clone()
        .expect("a shared engine")
}

#[test]
fn shared_engines_run_on_one_model_and_keep_their_own_order() {
    let (a_tx, a_rx) = start_shared(cfg(1, 60_000, 16), 1_000_001);
    let (b_tx, b_rx) = start_shared(cfg(1, 60_000, 16), 1_000_001);
    let (other_tx, other_rx) = start_shared(cfg(1, 60_000, 16), 1_000_002);
    assert_eq!(sharing(&a_rx).id, sharing(&b_rx).id, "same key, one host");
    assert_ne!(
        sharing(&a_rx).id,
        sharing(&other_rx).id,
        "another key, another host"
    );
    assert_eq!(
        (sharing(&a_rx).streams(), sharing(&other_rx).streams()),
        (2, 1)
    );
    drop((other_tx, other_rx));

    let f = fmt(24, 16);
    let frames: Vec<Vec<u8>> = (0..12).map(|i| frame(&f, i)).collect();
    let senders = [a_tx.clone(), b_tx.clone()];
    let feeds: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(s, tx)| {
            let mine: Vec<Vec<u8>> = frames.iter().skip(s).step_by(2).cloned().collect();
            std::thread::spawn(move || {
                for (i, d) in mine.into_iter().enumerate() {
                    tx.send(d, f, 100 * s + i).unwrap();
                }
            })
        })
        .collect();
    for feed in feeds {
        feed.join().unwrap();
    }
    drop((a_tx, b_tx));
    let d = Denoiser::new(fixture().load(Device::Cpu).unwrap(), Options::default()).unwrap();
    for (s, rx) in [&a_rx, &b_rx].into_iter().enumerate() {
        for i in 0..6 {
            let out = next_frame(rx);
            assert_eq!(out.payload, 100 * s + i, "stream {s}: order");
            let want = d.denoise_frames(&[&frames[2 * i + s]], &f, 1.0).unwrap();
            assert!(
                out.data == want[0],
                "stream {s} frame {i}: not the model's output"
            );
        }
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
        let st = rx.control().stats();
        assert_eq!((st.frames_in, st.frames_out, st.frames_dropped), (6, 6, 0));
    }
    let id = sharing(&a_rx).id;
    drop((a_rx, b_rx));
    // The last stream took the host with it: a new stream loads the model again.
    let (_tx, rx) = start_shared(cfg(1, 60_000, 16), 1_000_001);
    assert_ne!(sharing(&rx).id, id);
    assert_eq!(sharing(&rx).streams(), 1);
}

#[test]
fn a_flush_on_one_shared_stream_leaves_the_other_alone() {
    let (a_tx, a_rx) = start_shared(cfg(2, 60_000, 16), 1_000_003);
    let (b_tx, b_rx) = start_shared(cfg(2, 60_000, 16), 1_000_003);
    let f = fmt(24, 16);
    for i in 0..3 {
        a_tx.send(frame(&f, i), f, i).unwrap();
        b_tx.send(frame(&f, i), f, i).unwrap();
    }
    // A is flushed with frames queued, pending or in the model; B goes on.
    a_rx.control().flush_start();
    a_rx.control().flush_stop();
    for i in 3..6 {
        b_tx.send(frame(&f, i), f, i).unwrap();
    }
    a_tx.send(frame(&f, 10), f, 10).unwrap();
    b_tx.drain(99).unwrap();
    a_tx.drain(99).unwrap();
    for i in 0..6 {
        assert_eq!(next_frame(&b_rx).payload, i, "B lost or reordered a frame");
    }
    assert!(matches!(b_rx.recv_timeout(T), Ok(Output::Marker(99))));
    // A: what survived the flush (a batch the host had finished may arrive), then frame 10.
    let mut after = Vec::new();
    loop {
        match a_rx.recv_timeout(T) {
            Ok(Output::Frame(fr)) => after.push(fr.payload),
            Ok(Output::Marker(99)) => break,
            other => panic!("A: unexpected {other:?}"),
        }
    }
    assert_eq!(after.last(), Some(&10), "A after its flush: {after:?}");
    let (sa, sb) = (a_rx.control().stats(), b_rx.control().stats());
    assert_eq!((sb.frames_in, sb.frames_out, sb.frames_dropped), (6, 6, 0));
    assert_eq!(sa.frames_in, 4);
    assert_eq!(sa.frames_out + sa.frames_dropped, 4, "A: {sa:?}");
}

#[test]
fn one_call_on_several_streams_gives_each_its_own_result() {
    let d = Denoiser::new(fixture().load(Device::Cpu).unwrap(), Options::default()).unwrap();
    let f = fmt(24, 16);
    let frames: Vec<Vec<u8>> = (0..5).map(|i| frame(&f, i)).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    let (mut t1, mut t2) = (TemporalFilter::new(), TemporalFilter::new());
    // Separately: stream 1 (frames 0-1, strength 1, smoothed), 2 (frame 2, strength 0.5),
    // 3 (frames 3-4, strength 0: passthrough, smoothed).
    let want = [
        d.denoise_frames_smoothed(&refs[0..2], &f, 1.0, Some((&mut t1, 0.5)))
            .unwrap()
            .0,
        d.denoise_frames(&refs[2..3], &f, 0.5).unwrap(),
        d.denoise_frames_smoothed(&refs[3..5], &f, 0.0, Some((&mut t2, 0.5)))
            .unwrap()
            .0,
    ];
    let (mut u1, mut u2) = (TemporalFilter::new(), TemporalFilter::new());
    let mut groups = [
        FrameGroup {
            frames: &refs[0..2],
            strength: 1.0,
            temporal: Some((&mut u1, 0.5)),
        },
        FrameGroup {
            frames: &refs[2..3],
            strength: 0.5,
            temporal: None,
        },
        FrameGroup {
            frames: &refs[3..5],
            strength: 0.0,
            temporal: Some((&mut u2, 0.5)),
        },
    ];
    let (got, _) = d.denoise_groups(&f, &mut groups).unwrap();
    assert_eq!(got.len(), 3);
    for (g, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got.len(), want.len(), "group {g}");
        for (a, b) in got.iter().zip(want) {
            let worst = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
            assert!(worst <= 1, "group {g}: {worst} levels from its own run");
        }
    }
    assert!(
        got[2][0] == frames[3] && got[2][1] == frames[4],
        "strength 0: the input"
    );
    assert!(u1.is_primed() && !u2.is_primed());
}

/// `base` with a small pseudo-random change per byte (a still scene's next noisy frame).
fn near(base: &[u8], seed: usize) -> Vec<u8> {
    base.iter()
        .enumerate()
        .map(|(i, &b)| (b as i32 + ((i * 7 + seed * 13) % 9) as i32 - 4).clamp(0, 255) as u8)
        .collect()
}

#[test]
fn lookahead_holds_frames_for_their_future_and_empties_in_order_at_the_end() {
    let f = fmt(32, 24);
    let base = frame(&f, 3);
    let frames: Vec<Vec<u8>> = (0..4).map(|i| near(&base, i)).collect();
    // A max_latency far below the wait: held frames are not run on the timer.
    let c = EngineConfig {
        temporal: Strength::new(1.0),
        lookahead: 2,
        ..cfg(1, 1, 16)
    };
    let (tx, rx) = start_real(c);
    tx.send(frames[0].clone(), f, 0).unwrap();
    tx.send(frames[1].clone(), f, 1).unwrap();
    // Frame 0 waits for two later frames, however long they take.
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)).unwrap_err(),
        RecvError::Timeout
    );
    tx.send(frames[2].clone(), f, 2).unwrap();
    let first = next_frame(&rx);
    assert_eq!(first.payload, 0);
    tx.marker(100).unwrap();
    tx.send(frames[3].clone(), f, 3).unwrap();
    assert_eq!(next_frame(&rx).payload, 1);
    // The end of the stream runs the held frames, in order, the marker in its place.
    drop(tx);
    assert_eq!(next_frame(&rx).payload, 2);
    assert!(matches!(rx.recv_timeout(T), Ok(Output::Marker(100))));
    assert_eq!(next_frame(&rx).payload, 3);
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
    let s = rx.control().stats();
    assert_eq!((s.frames_in, s.frames_out, s.frames_dropped), (4, 4, 0));

    // Frame 0 is the denoiser's on frame 0 with frames 1-2 as its future, not the causal one.
    let d = Denoiser::new(fixture().load(Device::Cpu).unwrap(), Options::default()).unwrap();
    let mut t = TemporalFilter::new();
    t.set_future(2, vec![frames[1].clone(), frames[2].clone()]);
    let want = d
        .denoise_frames_smoothed(&[frames[0].as_slice()], &f, 1.0, Some((&mut t, 1.0)))
        .unwrap()
        .0;
    assert!(
        first.data == want[0],
        "frame 0 differs from its offline run"
    );
    let causal = d.denoise_frames(&[frames[0].as_slice()], &f, 1.0).unwrap();
    assert!(first.data != causal[0], "the future changed nothing");
}

#[test]
fn decode_only_frames_never_reach_the_model_and_come_out_as_they_went_in() {
    let f = fmt(24, 16);
    let frames: Vec<Vec<u8>> = (0..9).map(|i| frame(&f, i)).collect();
    // Frames 0-2 and 7-8 decode-only: the model takes the 4 others and fails on any more.
    let decode_only = |i: usize| !(3..7).contains(&i);
    for batch in [1, 3] {
        let (tx, rx) = start_fake(cfg(batch, 60_000, 16), Some(4));
        for (i, d) in frames.iter().enumerate() {
            match decode_only(i) {
                true => tx.send_decode_only(d.clone(), f, i).unwrap(),
                false => tx.send(d.clone(), f, i).unwrap(),
            }
        }
        drop(tx);
        for (i, d) in frames.iter().enumerate() {
            let out = next_frame(&rx);
            assert_eq!(out.payload, i, "batch {batch}: order");
            let inverted: Vec<u8> = d.iter().map(|b| 255 - b).collect();
            let want = if decode_only(i) { d } else { &inverted };
            assert!(out.data == *want, "batch {batch}, frame {i}");
        }
        assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
        let s = rx.control().stats();
        assert_eq!((s.frames_in, s.frames_out, s.frames_dropped), (9, 9, 0));
        assert_eq!((s.frames_decode_only, s.failed_batches), (5, 0), "{s:?}");
        let run = s.batches as f64 * s.mean_batch_size;
        assert!((run - 4.0).abs() < 1e-9, "batch {batch}: {s:?}");
    }
}

/// The outputs of an engine on the real model (`shared`: on the process's shared model) at
/// `temporal` 1 and `lookahead`, origin 0, for `frames`, those `decode_only` says sent
/// decode-only; and its stats.
fn temporal_run(
    frames: &[Vec<u8>],
    f: FrameFormat,
    batch: usize,
    lookahead: usize,
    shared: bool,
    decode_only: impl Fn(usize) -> bool,
) -> (Vec<Vec<u8>>, Stats) {
    let c = EngineConfig {
        temporal: Strength::new(1.0),
        lookahead,
        temporal_origin: Some(0),
        ..cfg(batch, 60_000, 64)
    };
    let (tx, rx) = match shared {
        true => start_shared(c, 1_000_004),
        false => start_real(c),
    };
    for (i, d) in frames.iter().enumerate() {
        match decode_only(i) {
            true => tx.send_decode_only(d.clone(), f, i).unwrap(),
            false => tx.send(d.clone(), f, i).unwrap(),
        }
    }
    drop(tx);
    let out = (0..frames.len())
        .map(|i| {
            let out = next_frame(&rx);
            assert_eq!(out.payload, i, "order");
            out.data
        })
        .collect();
    assert_eq!(rx.recv_timeout(T).unwrap_err(), RecvError::Disconnected);
    let s = rx.control().stats();
    (out, s)
}

#[test]
fn decode_only_frames_leave_the_temporal_state_the_model_would() {
    let f = fmt(32, 24);
    let base = frame(&f, 3);
    // 22 frames: the warm-up crosses a restart of the staggered recursions (every 16).
    let frames: Vec<Vec<u8>> = (0..22).map(|i| near(&base, i)).collect();
    let (warm, tail) = (18, 2);
    let decode_only = |i: usize| i < warm || i >= frames.len() - tail;
    for (batch, lookahead, shared) in [(1, 0, false), (1, 2, false), (1, 2, true), (3, 2, false)] {
        let what = format!("batch {batch}, lookahead {lookahead}, shared {shared}");
        let (all, s) = temporal_run(&frames, f, batch, lookahead, shared, |_| false);
        assert_eq!(s.frames_decode_only, 0, "{what}");
        let (marked, s) = temporal_run(&frames, f, batch, lookahead, shared, decode_only);
        assert_eq!(s.frames_decode_only, 20, "{what}: {s:?}");
        let run = s.batches as f64 * s.mean_batch_size;
        assert!(
            (run - 2.0).abs() < 1e-9,
            "{what}: the model ran {run} frames"
        );
        for (i, (m, a)) in marked.iter().zip(&all).enumerate() {
            if decode_only(i) {
                assert!(*m == frames[i], "{what}: decode-only frame {i} changed");
                continue;
            }
            // Batches of 3: the network ran these frames in a smaller call than in `all`.
            let worst = m.iter().zip(a).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
            let limit = if batch == 1 { 0 } else { 1 };
            assert!(
                worst <= limit,
                "{what}: frame {i}, {worst} levels off one pass"
            );
        }
    }
    // The control: without the frames before it, frame 18 comes out otherwise.
    let (alone, _) = temporal_run(&frames[warm..], f, 1, 0, false, |_| false);
    let (all, _) = temporal_run(&frames, f, 1, 0, false, |_| false);
    assert!(alone[0] != all[warm], "the earlier frames changed nothing");
}
