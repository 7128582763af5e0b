//! Properties and messages (issue 14): `device` checked when set, `device=auto` silent on a
//! machine without CUDA (tests/clipdenoise.rs), READY-only properties set while playing warn
//! and take effect on the next start, and what gst-inspect-1.0 shows.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gst::glib;
use gst::prelude::*;

use common::{fixture, gst_inspect, init};

/// GLib warnings of the `clipdenoise` log domain, while this guard lives.
struct Warnings {
    seen: Arc<Mutex<Vec<String>>>,
    handler: Option<glib::LogHandlerId>,
}

impl Warnings {
    fn capture() -> Self {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let log = seen.clone();
        let handler = glib::log_set_handler(
            Some("clipdenoise"),
            glib::LogLevels::LEVEL_WARNING,
            false,
            false,
            move |_, _, msg| log.lock().unwrap().push(msg.to_string()),
        );
        Warnings {
            seen,
            handler: Some(handler),
        }
    }
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Warnings {
    fn drop(&mut self) {
        if let Some(h) = self.handler.take() {
            glib::log_remove_handler(Some("clipdenoise"), h);
        }
    }
}

fn element() -> gst::Element {
    gst::ElementFactory::make("clipdenoise")
        .property("model", fixture())
        .build()
        .unwrap()
}

#[test]
fn device_typos_are_refused_when_set() {
    init();
    let warnings = Warnings::capture();
    let el = element();
    el.set_property("device", "cpu");
    for typo in ["cdua", "cuda:x", "gpu0"] {
        el.set_property("device", typo);
        assert_eq!(
            el.property::<String>("device"),
            "cpu",
            "{typo} was accepted"
        );
        let w = warnings.take();
        assert!(
            w.len() == 1 && w[0].contains(typo) && w[0].contains("device"),
            "{w:?}"
        );
    }
    for ok in ["auto", "cuda", "cuda:1", "CPU"] {
        el.set_property("device", ok);
        assert_eq!(el.property::<String>("device"), ok);
    }
    assert!(warnings.take().is_empty());
}

#[test]
fn ready_only_properties_set_while_playing_warn_and_apply_on_the_next_start() {
    init();
    let warnings = Warnings::capture();
    let pipeline = gst::parse::launch(&format!(
        "videotestsrc is-live=true ! video/x-raw,width=32,height=32 \
         ! clipdenoise name=d model=\"{}\" batch-size=1 ! fakesink",
        fixture()
    ))
    .unwrap();
    let d = pipeline
        .downcast_ref::<gst::Bin>()
        .unwrap()
        .by_name("d")
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (_, state, _) = pipeline.state(gst::ClockTime::from_seconds(120));
    assert_eq!(state, gst::State::Playing);
    d.set_property("batch-size", 2u32);
    let w = warnings.take();
    assert!(
        w.len() == 1 && w[0].contains("'batch-size'") && w[0].contains("next start"),
        "{w:?}"
    );
    let in_use = |d: &gst::Element| {
        d.property::<gst::Structure>("stats")
            .get::<u64>("batch-size")
            .unwrap()
    };
    assert_eq!(in_use(&d), 1, "changed under the running engine");
    assert_eq!(d.property::<u32>("batch-size"), 2);
    // The next start uses it.
    pipeline.set_state(gst::State::Ready).unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let (_, state, _) = pipeline.state(gst::ClockTime::from_seconds(120));
    assert_eq!(state, gst::State::Playing);
    assert_eq!(in_use(&d), 2);
    pipeline.set_state(gst::State::Null).unwrap();
    // Live-changeable ones do not warn.
    d.set_property("strength", 0.5f64);
    assert!(warnings.take().is_empty());
}

#[test]
fn gst_inspect_shows_defaults_licence_stats_fields_and_documentation() {
    init();
    let text = gst_inspect(Duration::from_secs(120));
    // The model's default is what its blurb calls the default.
    let lines: Vec<&str> = text.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim_start().starts_with("model "))
        .expect("the model property");
    let model = lines[at..(at + 3).min(lines.len())].join("\n");
    assert!(model.contains("Default: \"default\""), "{model}");
    assert!(model.contains("\"default\""), "{model}");
    // The licence the README states for the plugin.
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let licence = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("License"))
        .expect("a License line")
        .trim()
        .to_string();
    assert!(readme.contains(&format!("`{licence}`")), "{licence}");
    // A documentation URL.
    assert!(
        text.contains("Doc-uri") && text.contains("https://"),
        "{text}"
    );
    // Every field `stats` holds is documented in its blurb.
    let el = element();
    let stats = el.property::<gst::Structure>("stats");
    let blurb = el
        .find_property("stats")
        .unwrap()
        .blurb()
        .unwrap_or("")
        .to_string();
    for field in stats.fields() {
        assert!(
            blurb.contains(field.as_str()),
            "stats field {field} undocumented"
        );
    }
    assert!(stats.n_fields() >= 16);
}
