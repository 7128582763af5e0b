//! `precision=auto` (the default): the element resolves it at the warm-up to fp32 or bf16,
//! reports the resolved value and that it was chosen in `stats`, and runs exactly what an
//! explicit precision of that value runs (same output, byte for byte). Explicit precisions are
//! reported as set. On a shared model (the default) and on a model of its own.

mod common;

use gst::prelude::*;
use gst_check::Harness;

use common::{fixture, init};

fn element(props: &[(&str, &dyn ToValue)]) -> gst::Element {
    let el = gst::ElementFactory::make("clipdenoise")
        .property("model", fixture())
        .property("device", "cpu")
        .property("temporal", 0.0f64)
        .build()
        .unwrap();
    for (k, v) in props {
        el.set_property_from_value(k, &v.to_value());
    }
    el
}

/// `n` I420 64x48 frames through a harness around `el`; what came out, and `stats` then.
fn run(el: &gst::Element, n: u64) -> (Vec<Vec<u8>>, gst::Structure) {
    let mut h = Harness::with_element(el, Some("sink"), Some("src"));
    h.play();
    h.set_src_caps(
        gst::Caps::builder("video/x-raw")
            .field("format", "I420")
            .field("width", 64i32)
            .field("height", 48i32)
            .field("framerate", gst::Fraction::new(25, 1))
            .build(),
    );
    let size = 64 * 48 * 3 / 2;
    for i in 0..n {
        let data: Vec<u8> = (0..size)
            .map(|k| ((k * 131 + i as usize * 71 + (k * k) % 37) % 251) as u8)
            .collect();
        let mut b = gst::Buffer::from_mut_slice(data);
        b.get_mut()
            .unwrap()
            .set_pts(gst::ClockTime::from_mseconds(40 * i));
        assert_eq!(h.push(b), Ok(gst::FlowSuccess::Ok));
    }
    h.push_event(gst::event::Eos::new());
    let outs = (0..n)
        .map(|_| h.pull().unwrap().map_readable().unwrap().to_vec())
        .collect();
    let stats = el.property::<gst::Structure>("stats");
    el.set_state(gst::State::Null).unwrap();
    (outs, stats)
}

fn precision_of(el: &gst::Element) -> String {
    let v = el.property_value("precision");
    let (_, e) = gst::glib::EnumValue::from_value(&v).unwrap();
    e.nick().to_string()
}

#[test]
fn auto_is_the_default_and_runs_what_it_resolved_to() {
    init();
    for share in [true, false] {
        let auto = element(&[("share-model", &share)]);
        assert_eq!(precision_of(&auto), "auto", "the default");
        let (auto_out, s) = run(&auto, 3);
        let resolved = s.get::<String>("precision").unwrap();
        assert!(
            resolved == "fp32" || resolved == "bf16",
            "auto resolved to {resolved}: {s}"
        );
        assert!(s.get::<bool>("precision-chosen").unwrap(), "{s}");

        let set = element(&[("share-model", &share)]);
        set.set_property_from_str("precision", &resolved);
        let (set_out, s) = run(&set, 3);
        assert_eq!(s.get::<String>("precision").unwrap(), resolved, "{s}");
        assert!(!s.get::<bool>("precision-chosen").unwrap(), "{s}");
        assert_eq!(auto_out.len(), 3);
        assert!(
            auto_out == set_out,
            "auto ({resolved}) and precision={resolved} differ (share-model={share})"
        );
    }
}

#[test]
fn explicit_precisions_are_reported_as_set() {
    init();
    for p in ["fp32", "bf16"] {
        let el = element(&[("share-model", &false)]);
        el.set_property_from_str("precision", p);
        let (out, s) = run(&el, 2);
        assert_eq!(out.len(), 2);
        assert_eq!(s.get::<String>("precision").unwrap(), p, "{s}");
        assert!(!s.get::<bool>("precision-chosen").unwrap(), "{s}");
    }
}
