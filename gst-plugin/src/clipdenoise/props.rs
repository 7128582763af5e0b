//! Property values checked when they are set.

use gst::glib;

use clipdenoise::inference::DeviceRequest;

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
