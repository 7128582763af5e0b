//! Property values checked when they are set, and the `stats` documentation.

use gst::glib;

use clipdenoise::inference::DeviceRequest;

/// What `stats` holds, field by field (gst-inspect-1.0 shows it; a test checks that every
/// field of the structure is here).
pub(super) const STATS_BLURB: &str = "Counters since the element started (a structure): \
frames-in (frames handed to the model, late ones dropped by QoS included), \
frames-out (denoised frames pushed), \
frames-dropped (flushed, late (QoS), thinned, or in a failed batch), \
frames-thinned (live input dropped because the model was behind: the input is thinned to \
the rate the device sustains, so that what leaves is on time), \
frames-passed-through (buffers passed untouched at strength 0), \
batches (model calls), failed-batches (calls that failed), \
interrupted-batches (calls stopped part-way by a flush or a stop), \
batch-size and max-pixels (the values in use, chosen or set; max-pixels 0: whole frames), \
mean-batch-size (frames per call), \
mean-latency-ms and p99-latency-ms (from entering the element to leaving it; p99 over the \
last 1024 frames), mean-queue-wait-ms (entering the element to the start of its batch), \
upload-ms-per-frame, model-ms-per-frame, download-ms-per-frame (time per frame of each stage \
of a batch: conversion to the model's input, the network, conversion back); \
over the last 5 s only, for long live streams: recent-frames-out, recent-frames-dropped, \
recent-mean-latency-ms, recent-max-latency-ms";

/// The `device` property's new value, or why it is refused (the old one stays).
pub(super) fn device(value: &glib::Value) -> Result<String, String> {
    let text = value
        .get::<Option<String>>()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Ok("auto".into());
    }
    text.parse::<DeviceRequest>()
        .map(|_| text.trim().to_string())
        .map_err(|e| format!("device '{text}' refused: {e}"))
}

/// The `model` property's new value: unset or empty is the built-in default.
pub(super) fn model(value: &glib::Value) -> String {
    value
        .get::<Option<String>>()
        .ok()
        .flatten()
        .filter(|s| !s.trim().is_empty())
        .unwrap_or_else(|| "default".into())
}
