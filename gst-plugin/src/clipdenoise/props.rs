//! Property values checked when they are set.

use gst::glib;

use clipdenoise::inference::DeviceRequest;
use clipdenoise::refine::Refine;

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

/// The `refine` property's new value, as the library writes it back, or why it is refused
/// (the old one stays): unset or empty is `off`.
pub(super) fn refine(value: &glib::Value) -> Result<String, String> {
    let text = value
        .get::<Option<String>>()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if text.trim().is_empty() {
        return Ok("off".into());
    }
    text.parse::<Refine>()
        .map(|r| r.to_string())
        .map_err(|e| format!("refine refused: {e}"))
}
