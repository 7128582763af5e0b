//! A mutation fuzzer for `plan.json`, the job plan every worker of a segmented job reads
//! (untrusted: it crosses machines and people edit it). Valid plans are mutated as bytes
//! (flips, insertions, deletions, truncation) and as JSON (a random field replaced by a
//! hostile value: huge, negative, fractional, the wrong type, a neighbour's value). Every case
//! must end in `Ok` or a one-line error; an accepted plan must hold every invariant the
//! workers rely on (contiguous segments covering every frame, warm-up and lookahead within
//! bounds, timestamps in order). A longer campaign:
//! `CLIPDENOISE_FUZZ_CASES=200000 CLIPDENOISE_FUZZ_SEED=7 cargo test --release --test job_plan_fuzz`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use clipdenoise::job::plan::{split, VERSION};
use clipdenoise::job::{FrameTime, JobDir, JobPlan, Settings, SourceId, Split};
use serde_json::Value;

/// xorshift64*: the project's tests need no RNG crate for this.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn valid_plan(rng: &mut Rng) -> JobPlan {
    let n = 2 + rng.below(300) as u64;
    let gop = 1 + rng.below(40) as u64;
    let frames: Vec<FrameTime> = (0..n)
        .map(|i| FrameTime {
            pts_ns: 1_000 + i * 33_366_666,
            keyframe: i % gop == 0,
        })
        .collect();
    let warmup = match rng.below(3) {
        0 => None,
        _ => Some(rng.below(50) as u64),
    };
    let lookahead = rng.below(4) as u64;
    let how = if rng.below(2) == 0 {
        Split::Count(1 + rng.below(n.min(12) as usize))
    } else {
        Split::Seconds(0.2 + rng.below(40) as f64 / 10.0)
    };
    JobPlan {
        version: VERSION,
        source: SourceId {
            path: "/data/in.mkv".into(),
            size: 123_456,
            duration_ns: n * 33_366_666,
            sha256: "0f".repeat(32),
            video_pts_offset_ns: 0,
        },
        settings: Settings {
            model: "default".into(),
            model_sha256: "a1".repeat(32),
            device: "auto".into(),
            precision: "fp32".into(),
            strength: 1.0,
            coarse_grain: false,
            refine: "wiener:sigma=flat,scale=2,dc=input".into(),
            batch_size: None,
            max_pixels: Some(2_000_000),
            temporal: 0.5,
            codec: "ffv1".into(),
            crf: None,
            preset: "medium".into(),
            warmup,
            lookahead,
        },
        frames: n,
        segments: split(&frames, how, warmup, lookahead).unwrap(),
    }
}

const HOSTILE: &[&str] = &[
    "null",
    "true",
    "-1",
    "0",
    "1",
    "2",
    "18446744073709551615",
    "18446744073709551616",
    "4294967297",
    "1e308",
    "-1e308",
    "0.5",
    "\"\"",
    "\"x\"",
    "[]",
    "{}",
    "[1,2]",
    "\"\\u0000\"",
    "\"ffv1\"",
    "\"h264\"",
    "99999999999999999999999",
];

/// JSON pointers to every value below the root of `v`.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    let kids: Vec<(String, &Value)> = match v {
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| (k.replace('~', "~0").replace('/', "~1"), x))
            .collect(),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .map(|(i, x)| (i.to_string(), x))
            .collect(),
        _ => Vec::new(),
    };
    for (k, x) in kids {
        let p = format!("{at}/{k}");
        out.push(p.clone());
        pointers(x, &p, out);
    }
}

fn mutate_json(rng: &mut Rng, plan: &JobPlan) -> Vec<u8> {
    let mut v = serde_json::to_value(plan).unwrap();
    for _ in 0..1 + rng.below(3) {
        let mut all = Vec::new();
        pointers(&v, "", &mut all);
        let p = all[rng.below(all.len())].clone();
        let new = match rng.below(4) {
            // A neighbour's value: plausible, wrong.
            0 => v
                .pointer(&all[rng.below(all.len())])
                .cloned()
                .unwrap_or(Value::Null),
            1 => match v.pointer(&p) {
                Some(Value::Number(n)) => Value::from(
                    n.as_u64()
                        .unwrap_or(0)
                        .wrapping_add(rng.below(3) as u64)
                        .wrapping_sub(1),
                ),
                other => other.cloned().unwrap_or(Value::Null),
            },
            _ => serde_json::from_str(HOSTILE[rng.below(HOSTILE.len())]).unwrap_or(Value::Null),
        };
        if let Some(slot) = v.pointer_mut(&p) {
            *slot = new;
        }
    }
    serde_json::to_vec(&v).unwrap()
}

fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    for _ in 0..1 + rng.below(4) {
        let i = rng.below(bytes.len());
        match rng.below(4) {
            0 => bytes[i] = rng.next() as u8,
            1 => bytes.insert(i, b"0123456789-.,:{}[]\"e"[rng.below(20)]),
            2 => {
                bytes.remove(i);
            }
            _ => bytes.truncate(i),
        }
        if bytes.is_empty() {
            bytes.push(b'{');
        }
    }
}

/// What an accepted plan must hold beyond `check` (which it ran): the workers' view.
fn invariants(p: &JobPlan) {
    let mut at = 0;
    for (i, s) in p.segments.iter().enumerate() {
        assert_eq!(s.index, i);
        assert_eq!(s.start, at);
        assert!(s.keyframe <= s.decode_start && s.decode_start <= s.start && s.start < s.end);
        assert!(s.end <= s.stop && s.stop <= p.frames);
        at = s.end;
    }
    assert_eq!(at, p.frames);
    assert!(p
        .settings
        .refine
        .parse::<clipdenoise::refine::Refine>()
        .is_ok());
    let job = JobDir::new("/nonexistent-job");
    assert!(job.segment(p, p.segments.len() as u64).is_err());
    let _ = job.states(p, false);
}

fn one_case(bytes: &[u8]) {
    if let Ok(p) = JobPlan::parse(bytes, Path::new("plan.json")) {
        assert!(p.check().is_ok());
        invariants(&p);
    } else if let Err(e) = JobPlan::parse(bytes, Path::new("plan.json")) {
        assert!(!e.to_string().contains('\n'), "a multi-line error: {e}");
    }
}

#[test]
fn mutated_plans_are_refused_in_one_line_or_hold_every_invariant() {
    let cases: usize = std::env::var("CLIPDENOISE_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6_000);
    let seed: u64 = std::env::var("CLIPDENOISE_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed.wrapping_mul(0x1000_0000_01b3));
    let (mut accepted, mut refused) = (0, 0);
    for case in 0..cases {
        let plan = valid_plan(&mut rng);
        let json = plan.to_json().into_bytes();
        assert!(
            JobPlan::parse(&json, Path::new("p")).is_ok(),
            "a valid plan refused"
        );
        let bytes = if case % 2 == 0 {
            mutate_json(&mut rng, &plan)
        } else {
            let mut b = json.clone();
            mutate_bytes(&mut rng, &mut b);
            b
        };
        let r = catch_unwind(AssertUnwindSafe(|| one_case(&bytes)));
        if r.is_err() {
            let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes");
            std::fs::create_dir_all(&dir).unwrap();
            let f = dir.join(format!("plan-{seed}-{case}.json"));
            std::fs::write(&f, &bytes).unwrap();
            panic!("case {case} panicked; input written to {}", f.display());
        }
        match JobPlan::parse(&bytes, Path::new("p")) {
            Ok(_) => accepted += 1,
            Err(_) => refused += 1,
        }
    }
    // The mutations reach both sides: some survive (harmless edits), most are refused.
    assert!(refused > cases / 2, "{refused} of {cases} refused");
    assert!(
        accepted > 0,
        "no mutated plan was accepted: the mutations are too blunt"
    );
}
