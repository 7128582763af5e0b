//! The `stats` property: its fields and their documentation, side by side.

use clipdenoise::engine;

/// What `stats` holds, field by field (gst-inspect-1.0 shows it; a test checks that every
/// field of the structure is here).
pub(super) const BLURB: &str = "Counters since the element started (a structure): \
frames-in (frames handed to the model, late ones dropped by QoS included), \
frames-out (denoised frames pushed), \
frames-dropped (flushed, late (QoS), thinned, or in a failed batch), \
frames-thinned (live input dropped because the model was behind: the input is thinned to \
the rate the device sustains, so that what leaves is on time), \
frames-passed-through (buffers passed untouched at strength 0), \
frames-decode-only (DECODE_ONLY buffers: frames not to be shown, such as a job segment's \
warm-up, which only update the temporal stage's state for the frames after them, without \
the network, and go downstream untouched with their flag; not in batches), \
batches (model calls), failed-batches (calls that failed), \
interrupted-batches (calls stopped part-way by a flush or a stop), \
batch-size and max-pixels (the values in use, chosen or set; max-pixels 0: whole frames), \
model-id (the shared model this element runs on: elements with the same id share one \
loaded model and its thread; 0: a model of its own, share-model=false), \
model-streams (the elements running on that model now, this one included; 0: stopped), \
mean-batch-size (frames per call), \
latency-ms (the latency the element reports in the LATENCY query: its batch time (the \
largest of the last 8, plus how far those 8 spread), plus at most one frame interval of \
queueing, plus max-latency for batches above 1), \
mean-latency-ms and p99-latency-ms (from entering the element until the model finished the \
frame: queueing, batching, the model; the time a finished frame then waits for a \
synchronising sink to take it is downstream's, not counted; p99 over the last 1024 frames), \
mean-queue-wait-ms (entering the element to the start of its batch), \
upload-ms-per-frame, model-ms-per-frame, download-ms-per-frame (time per frame of each stage \
of a batch: conversion to the model's input, the network, conversion back); \
over the last 5 s only, for long live streams: recent-frames-out, recent-frames-dropped, \
recent-mean-latency-ms, recent-max-latency-ms; \
warm-up-ms (the model's last run on a blank frame of the negotiated size, when caps \
arrive: two runs, one when the first takes over a second, so that the first frame is not the \
slow first run and the latency is known before it, from the last), precision (what the model runs in: fp32, bf16 or fp16) and precision-chosen (true when precision=auto chose it: on the CPU, the faster of fp32 and bf16 timed on the negotiated size at the warm-up, bf16 only within 0.05 dB of fp32; false when set, or before auto ran), \
temporal-bytes (the memory the temporal stage holds now: the frames held back as the next \
frames' future with lookahead, at most lookahead frames, the last run's future kept packed \
and in float, 12 bytes a pixel, so that the next run converts only its new frame, and the \
recursion's state, 20 bytes a pixel (40 with temporal-origin set: two staggered \
recursions); 0 with temporal=0, after a flush, a gap or a DISCONT buffer) and \
temporal-max-bytes (the most so far: at most 2 x lookahead packed frames plus 20 bytes a \
pixel, 40 with temporal-origin, plus 12 bytes a pixel for each of lookahead frames)";

/// The element's own counters, next to the engine's.
pub(super) struct ElementCounts {
    pub passed_through: u64,
    pub thinned: u64,
    /// The values in use (0 when no engine runs).
    pub batch_size: u64,
    pub max_pixels: u64,
    /// The shared model's id (0: not shared) and the streams on it now.
    pub model_id: u64,
    pub model_streams: u64,
    /// The latency the element reports now, in ms.
    pub latency_ms: f64,
}

/// The `stats` structure: every field here is described in [`BLURB`].
pub(super) fn structure(stats: &engine::Stats, element: &ElementCounts) -> gst::Structure {
    gst::Structure::builder("clipdenoise-stats")
        .field("frames-in", stats.frames_in)
        .field("frames-out", stats.frames_out)
        .field("frames-dropped", stats.frames_dropped)
        .field("frames-passed-through", element.passed_through)
        .field("frames-thinned", element.thinned)
        .field("frames-decode-only", stats.frames_decode_only)
        .field("batches", stats.batches)
        .field("failed-batches", stats.failed_batches)
        .field("interrupted-batches", stats.interrupted_batches)
        .field("batch-size", element.batch_size)
        .field("max-pixels", element.max_pixels)
        .field("model-id", element.model_id)
        .field("model-streams", element.model_streams)
        .field("mean-batch-size", stats.mean_batch_size)
        .field("latency-ms", element.latency_ms)
        .field("mean-latency-ms", stats.mean_latency_ms)
        .field("p99-latency-ms", stats.p99_latency_ms)
        .field("mean-queue-wait-ms", stats.mean_queue_wait_ms)
        .field("upload-ms-per-frame", stats.upload_ms_per_frame)
        .field("model-ms-per-frame", stats.model_ms_per_frame)
        .field("download-ms-per-frame", stats.download_ms_per_frame)
        .field("recent-frames-out", stats.recent_frames_out)
        .field("recent-frames-dropped", stats.recent_frames_dropped)
        .field("recent-mean-latency-ms", stats.recent_mean_latency_ms)
        .field("recent-max-latency-ms", stats.recent_max_latency_ms)
        .field("warm-up-ms", stats.warm_up_ms)
        .field("precision", stats.precision.as_str())
        .field("precision-chosen", stats.precision_chosen)
        .field("temporal-bytes", stats.temporal_bytes)
        .field("temporal-max-bytes", stats.temporal_max_bytes)
        .build()
}
