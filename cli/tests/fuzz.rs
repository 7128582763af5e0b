//! A mutation fuzzer for the parsers of untrusted weight files, on the stable toolchain:
//!
//! - `pickle`: `data.pkl` of the fixtures (a torch.save checkpoint, a TorchScript archive) and
//!   small synthetic ones, through the restricted unpickler and the tensor-view checks;
//! - `torch`: whole PyTorch zip archives (raw bytes mutated: zip structure, CRCs; or the
//!   pickle mutated and the archive rebuilt with valid CRCs so it reaches tensor rebuilding),
//!   then config inference and the model check on what they hold;
//! - `safetensors`: the header and `__metadata__` of safetensors files, then the model build;
//! - `config`: tensor maps shaped like models of random small configs with shapes, dtypes,
//!   names and metadata configs mutated, written as safetensors, then the model build.
//!
//! Every case must end in `Ok` or a one-line error; a panic fails the test and the input is
//! written to `target/tmp/fuzz-crashes/` (copy it to `tests/fuzz-corpus/<target>/` once
//! fixed: every file there is replayed by `fuzz_corpus_replays_cleanly`).
//! Stack overflows and aborts kill the process: rerun with `CLIPDENOISE_FUZZ_LOG=1` to see
//! the last case started, then `CLIPDENOISE_FUZZ_ONLY=<target>:<case>` to write its input.
//!
//! CI runs a fixed budget (see `CI_CASES`, seconds on 2 slow cores). A longer campaign:
//! `CLIPDENOISE_FUZZ_CASES=200000 CLIPDENOISE_FUZZ_SEED=7 cargo test --release --test fuzz`
//! (cases per target; the seed picks another sequence).

mod support;

use std::collections::HashMap;
use std::io::{Cursor, Read};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use clipdenoise::model::Config;
use clipdenoise::weights::pickle::{parse_torch_file, pickle_tensor_names, Limits};
use clipdenoise::weights::{self, model_tensor_specs, Missing, TensorMap, META_CONFIG};
use support::{fixture, hostile, zeros_f32, zip_bytes, Pickle, Rng};
use tch::{Device, Kind, Tensor};

/// Cases per target in CI: 33500 cases, about 10 s on 2 busy cores (nice 19, a training job
/// beside it).
const CI_CASES: [(&str, usize); 4] = [
    ("pickle", 20_000),
    ("torch", 6_000),
    ("safetensors", 6_000),
    ("config", 1_500),
];

const NAME: &str = "fuzz.bin";

// ---------------------------------------------------------------------------------------------
// Targets: each takes the bytes of one input and must not panic.

/// How far an input got: refused by the parser, parsed but not a model, or a model built.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum Outcome {
    Refused,
    Parsed,
    Model,
}

fn run_pickle(bytes: &[u8]) -> Outcome {
    match pickle_tensor_names(bytes, &Limits::default()) {
        Ok(_) => Outcome::Parsed,
        // As read_torch_file reports it.
        Err(e) => refused(&clipdenoise::Error::format(NAME, e).to_string()),
    }
}

fn run_torch(bytes: &[u8]) -> Outcome {
    match parse_torch_file(bytes, Path::new(NAME), &|_| true, &Limits::default()) {
        Ok(file) => {
            // As `import checkpoint` does: the state dict under `params`, if there is one.
            let tensors: TensorMap = file
                .tensors
                .into_iter()
                .map(|(k, t)| (k.strip_prefix("params.").unwrap_or(&k).to_string(), t))
                .collect();
            check_model(&tensors, &HashMap::new())
        }
        Err(e) => refused(&e.to_string()),
    }
}

fn run_safetensors(bytes: &[u8]) -> Outcome {
    match weights::parse_safetensors(bytes, Path::new(NAME)) {
        Ok((tensors, meta)) => check_model(&tensors, &meta),
        Err(e) => refused(&e.to_string()),
    }
}

/// What the importers and loaders do with tensors: config from metadata or inferred, every
/// tensor checked, the model built.
fn check_model(tensors: &TensorMap, meta: &HashMap<String, String>) -> Outcome {
    let mut outcome = Outcome::Parsed;
    for missing in [Missing::Error, Missing::DecoderMayBeMissing] {
        match weights::build_model(tensors, meta, Path::new(NAME), Device::Cpu, missing) {
            Ok(m) => {
                assert!(m.model.config.validate().is_ok());
                outcome = Outcome::Model;
            }
            Err(e) => assert_one_line(&e.to_string()),
        }
    }
    outcome
}

fn refused(e: &str) -> Outcome {
    assert_one_line(e);
    Outcome::Refused
}

fn assert_one_line(e: &str) {
    assert!(
        !e.is_empty() && !e.chars().any(char::is_control),
        "error is not one line: {e:?}"
    );
}

fn run(target: &str, bytes: &[u8]) -> Outcome {
    match target {
        "pickle" => run_pickle(bytes),
        "torch" => run_torch(bytes),
        "safetensors" | "config" => run_safetensors(bytes),
        _ => unreachable!("{target}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Seeds

fn read_entry(archive: &[u8], name: &str) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    let mut f = z.by_name(name).unwrap();
    let mut v = Vec::new();
    f.read_to_end(&mut v).unwrap();
    v
}

/// Every entry of an archive: (name, bytes).
fn entries(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(archive)).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (f.name().unwrap().into_owned(), v)
        })
        .collect()
}

/// A small checkpoint: `{'params': {...}}`-like state dict of a few tensors, with views.
fn small_checkpoint_pickle() -> Vec<u8> {
    Pickle::state_dict(&[
        (
            "encoder.conv3.weight",
            "0",
            36,
            &[2, 2, 3, 3],
            &[18, 9, 3, 1],
        ),
        ("encoder.bn1.weight", "1", 4, &[2], &[2]),
        ("encoder.layer1.0.conv1.weight", "1", 4, &[2, 2], &[1, 2]),
        ("last.weight", "2", 2, &[], &[]),
    ])
}

fn small_checkpoint(pickle: &[u8], deflate: bool) -> Vec<u8> {
    zip_bytes(&[
        ("small/data.pkl", pickle, deflate),
        ("small/byteorder", b"little", false),
        ("small/data/0", &zeros_f32(36), deflate),
        ("small/data/1", &zeros_f32(4), false),
        ("small/data/2", &zeros_f32(2), false),
        ("small/version", b"3\n", false),
    ])
}

/// A torch.save archive of `tensors` (zeros; float32 or int64), one storage each, under
/// `params` like the authors' checkpoints.
fn torch_archive(tensors: &TensorMap) -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(b"}").str("params").op(b"}(");
    let mut data = Vec::new();
    for (i, (name, t)) in tensors.iter().enumerate() {
        let size = t.size();
        let mut stride = vec![1i64; size.len()];
        for d in (0..size.len().saturating_sub(1)).rev() {
            stride[d] = stride[d + 1] * size[d + 1];
        }
        let numel = size.iter().product::<i64>();
        let (storage, elt) = match t.kind() {
            Kind::Int64 => ("LongStorage", 8),
            _ => ("FloatStorage", 4),
        };
        p.str(name)
            .typed_tensor(storage, &i.to_string(), numel, 0, &size, &stride);
        data.push((format!("m/data/{i}"), vec![0u8; numel as usize * elt]));
    }
    p.op(b"us");
    let pickle = p.finish();
    let mut entries: Vec<(&str, &[u8], bool)> = vec![("m/data.pkl", &pickle, false)];
    entries.extend(data.iter().map(|(n, b)| (n.as_str(), &b[..], false)));
    zip_bytes(&entries)
}

/// The tensors of a model of `config`, zeros.
fn model_tensors(config: &Config) -> TensorMap {
    model_tensor_specs(config)
        .into_iter()
        .map(|s| (s.name, Tensor::zeros(&s.shape, (s.kind, Device::Cpu))))
        .collect()
}

fn safetensors_bytes(tensors: &TensorMap, meta: HashMap<String, String>) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("m.safetensors");
    weights::write_safetensors(&p, tensors, meta).unwrap();
    std::fs::read(p).unwrap()
}

fn tiny_config(width: i64, blocks: [i64; 3]) -> Config {
    Config {
        aug_level: 0.0,
        ..Config::new(width, blocks)
    }
}

struct Seeds {
    pickles: Vec<Vec<u8>>,
    /// Archives: small ones (most cases) and the fixtures (some cases).
    small_archives: Vec<Vec<u8>>,
    big_archives: Vec<Vec<u8>>,
    small_safetensors: Vec<Vec<u8>>,
    big_safetensors: Vec<Vec<u8>>,
}

fn seeds() -> Seeds {
    let ckpt = std::fs::read(fixture("tiny-w8/net_g_like.pth")).unwrap();
    let script = std::fs::read(fixture("tiny-w8/clip_like_rn.pt")).unwrap();
    let small_pickle = small_checkpoint_pickle();
    let config = tiny_config(2, [1, 1, 1]);
    let w2 = model_tensors(&config);
    let meta = weights::model_metadata(&config, &weights::Provenance::default());
    Seeds {
        pickles: vec![
            read_entry(&ckpt, "net_g_like/data.pkl"),
            read_entry(&script, "clip_like_rn/data.pkl"),
            small_pickle.clone(),
            read_entry(&torch_archive(&w2), "m/data.pkl"),
        ],
        small_archives: vec![
            small_checkpoint(&small_pickle, false),
            small_checkpoint(&small_pickle, true),
            torch_archive(&w2),
        ],
        big_archives: vec![ckpt, script],
        small_safetensors: vec![
            safetensors_bytes(&w2, meta),
            safetensors_bytes(&w2, HashMap::new()),
        ],
        big_safetensors: vec![
            std::fs::read(fixture("tiny-w8/official_state_dict.safetensors")).unwrap(),
            std::fs::read(fixture("tiny-w8/encoder_from_archive.safetensors")).unwrap(),
        ],
    }
}

// ---------------------------------------------------------------------------------------------
// Mutations

const INTERESTING: [u64; 14] = [
    0,
    1,
    2,
    0x7f,
    0x80,
    0xff,
    0x7fff,
    0xffff,
    1024,
    16384,
    0x7fff_ffff,
    0xffff_ffff,
    i64::MAX as u64,
    u64::MAX,
];

/// Pickle opcodes with plausible arguments.
fn random_opcode(rng: &mut Rng) -> Vec<u8> {
    const SIMPLE: &[u8] = b"(t)]}02aeusbR\x81\x85\x86\x87NQ\x88\x89\x94\x93.1";
    let small = |rng: &mut Rng| (rng.below(8)) as u8;
    match rng.below(12) {
        0 => vec![b'h', small(rng)],
        1 => vec![b'q', small(rng)],
        2 => [&b"j"[..], &(rng.below(8) as u32).to_le_bytes()].concat(),
        3 => vec![b'K', rng.next() as u8],
        4 => [
            &b"J"[..],
            &(INTERESTING[rng.below(14)] as u32).to_le_bytes(),
        ]
        .concat(),
        5 => {
            let s = ["storage", "cpu", "0", "1", "params", "encoder.conv3.weight"][rng.below(6)];
            [&[0x8c, s.len() as u8][..], s.as_bytes()].concat()
        }
        6 => {
            let g = [
                "collections\nOrderedDict\n",
                "torch._utils\n_rebuild_tensor_v2\n",
                "torch\nFloatStorage\n",
                "torch\nLongStorage\n",
                "__torch__.M\nM\n",
                "torch.jit._pickle\nbuild_intlist\n",
                "torch.jit._pickle\nrestore_type_tag\n",
            ][rng.below(7)];
            [&b"c"[..], g.as_bytes()].concat()
        }
        7 => [&[0x8a, 8][..], &rng.next().to_le_bytes()].concat(),
        _ => vec![SIMPLE[rng.below(SIMPLE.len())]],
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, others: &[Vec<u8>], pickle: bool, focus: usize) {
    // Most mutations land in the first `focus` bytes (a header), when given.
    let pos = |rng: &mut Rng, len: usize| {
        if len == 0 {
            0
        } else if focus > 0 && !rng.chance(4) {
            rng.below(len.min(focus))
        } else {
            rng.below(len)
        }
    };
    let rounds = if rng.chance(2) { 1 } else { 2 + rng.below(3) };
    for _ in 0..rounds {
        let len = data.len();
        match rng.below(if pickle { 10 } else { 9 }) {
            0 | 1 if len > 0 => {
                let i = pos(rng, len);
                data[i] ^= 1 << rng.below(8);
            }
            2 if len > 0 => {
                let i = pos(rng, len);
                data[i] = INTERESTING[rng.below(INTERESTING.len())] as u8;
            }
            3 if len >= 8 => {
                let i = pos(rng, len - 7);
                let v = INTERESTING[rng.below(INTERESTING.len())];
                let width = [1, 2, 4, 8][rng.below(4)].min(len - i);
                data[i..i + width].copy_from_slice(&v.to_le_bytes()[..width]);
            }
            4 if len > 0 => {
                let i = pos(rng, len);
                let max = if rng.chance(8) { 4096 } else { 16 };
                let n = (1 + rng.below(max)).min(len - i);
                data.drain(i..i + n);
            }
            5 if len > 0 => {
                // Copy a chunk of this input, or of another seed, somewhere.
                let src = if rng.chance(3) && !others.is_empty() {
                    &others[rng.below(others.len())]
                } else {
                    &*data
                };
                if src.is_empty() {
                    continue;
                }
                let a = rng.below(src.len());
                let n = (1 + rng.below(64)).min(src.len() - a);
                let chunk = src[a..a + n].to_vec();
                let i = pos(rng, len);
                data.splice(i..i, chunk);
            }
            6 if len > 0 => data.truncate(rng.below(len)),
            7 => {
                let i = pos(rng, len);
                let n = 1 + rng.below(8);
                let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
                data.splice(i..i, bytes);
            }
            8 if len > 0 => {
                // Repeat a chunk many times (nesting, DUP/memo bombs, long lists).
                let a = pos(rng, len);
                let n = (1 + rng.below(4)).min(len - a);
                let chunk = data[a..a + n].to_vec();
                let max = if rng.chance(4) { 100_000 } else { 100 };
                let times = 1 + rng.below(max);
                let rep = chunk.repeat(times);
                data.splice(a..a, rep);
            }
            9 => {
                let i = pos(rng, len);
                let op = random_opcode(rng);
                data.splice(i..i, op);
            }
            _ => {}
        }
    }
}

/// A safetensors header, mutated as JSON text: numbers, dtypes and the config's values.
fn mutate_header_json(rng: &mut Rng, data: &mut Vec<u8>) {
    if data.len() < 8 {
        return;
    }
    let n = u64::from_le_bytes(data[..8].try_into().unwrap()) as usize;
    if n == 0 || 8 + n > data.len() {
        return;
    }
    let Ok(header) = std::str::from_utf8(&data[8..8 + n]) else {
        return;
    };
    let mut h = header.to_string();
    for _ in 0..1 + rng.below(3) {
        let numbers: Vec<(usize, usize)> = number_spans(&h);
        match rng.below(3) {
            0 if !numbers.is_empty() => {
                let (a, b) = numbers[rng.below(numbers.len())];
                let v = [
                    "0",
                    "1",
                    "-1",
                    "3",
                    "1024",
                    "1026",
                    "4096",
                    "65536",
                    "2147483648",
                    "18446744073709551615",
                    "1e9",
                    "1.5",
                    "NaN",
                ][rng.below(13)];
                h.replace_range(a..b, v);
            }
            1 => {
                let dts = [
                    "\"F32\"", "\"F16\"", "\"BF16\"", "\"F64\"", "\"I64\"", "\"U8\"", "\"BOOL\"",
                    "\"I8\"",
                ];
                if let Some(i) = h.find(dts[rng.below(dts.len())]) {
                    let to = dts[rng.below(dts.len())];
                    let end = i + h[i..].find('"').unwrap() + 1 + h[i + 1..].find('"').unwrap();
                    h.replace_range(i..end + 1, to);
                }
            }
            _ => {
                for key in ["width", "blocks", "aug_level", "kernel_dilations"] {
                    if rng.chance(2) {
                        let v = [
                            "1024",
                            "1022",
                            "-2",
                            "0",
                            "3",
                            "[64,64,64]",
                            "[0,1,1]",
                            "[1,1]",
                            "null",
                            "1e400",
                            "0.999",
                        ][rng.below(11)];
                        h = h.replace(
                            &format!("\\\"{key}\\\":"),
                            &format!("\\\"{key}\\\":{v},\\\"x\\\":"),
                        );
                    }
                }
            }
        }
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(h.as_bytes());
    out.extend_from_slice(&data[8 + n..]);
    *data = out;
}

fn number_spans(s: &str) -> Vec<(usize, usize)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() && (i == 0 || !b[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

/// A model's tensors for a random small config with names, shapes, dtypes and the metadata
/// config changed.
fn random_model_file(rng: &mut Rng) -> Vec<u8> {
    let b = |rng: &mut Rng| 1 + rng.below(3) as i64;
    let mut config = tiny_config(2 * (1 + rng.below(4) as i64), [b(rng), b(rng), b(rng)]);
    // A third of the models have the kernel head, with its default or other passes.
    if rng.chance(3) {
        config.head = clipdenoise::model::Head::Kernel;
        config.kernel_dilations = match rng.below(3) {
            0 => None,
            n => Some((0..n * 2).map(|_| [1, 2, 4, 8][rng.below(4)]).collect()),
        };
    }
    let mut t = model_tensors(&config);
    let names: Vec<String> = t.keys().cloned().collect();
    for _ in 0..1 + rng.below(4) {
        let name = names[rng.below(names.len())].clone();
        match rng.below(6) {
            0 => {
                t.remove(&name);
            }
            1 | 2 => {
                let dims = rng.below(6);
                let shape: Vec<i64> = (0..dims)
                    .map(|_| [0, 1, 2, 3, 4, 8, 1024, 4096][rng.below(8)])
                    .collect();
                if shape.iter().product::<i64>() <= 1 << 16 {
                    t.insert(name, Tensor::zeros(&shape, (Kind::Float, Device::Cpu)));
                }
            }
            3 => {
                let kind = [
                    Kind::Half,
                    Kind::Double,
                    Kind::Int64,
                    Kind::Uint8,
                    Kind::BFloat16,
                ][rng.below(5)];
                if let Some(v) = t.get(&name).map(|v| v.to_kind(kind)) {
                    t.insert(name, v);
                }
            }
            4 => {
                let Some(v) = t.remove(&name) else {
                    continue;
                };
                let new = [
                    "encoder.layer4.0.conv1.weight",
                    "encoder.layer1.9.conv1.weight",
                    "encoder.conv3.weight",
                    "up_path.9.x",
                    "module.last.weight",
                ][rng.below(5)];
                t.insert(new.to_string(), v);
            }
            _ => {
                t.retain(|k, _| k.starts_with("encoder."));
            }
        }
    }
    let meta = match rng.below(4) {
        0 => HashMap::new(),
        1 => weights::model_metadata(&config, &weights::Provenance::default()),
        _ => {
            let w = [0, 2, 3, 8, 1024, 1026, -2, 1i64 << 40][rng.below(8)];
            let blocks = [
                "[1,1,1]",
                "[64,64,64]",
                "[0,1,1]",
                "[65,1,1]",
                "[1,1]",
                "[3,4,6]",
            ][rng.below(6)];
            let aug = ["0.0", "0.025", "1.0", "-1", "1e300"][rng.below(5)];
            // The head and its kernel passes, good and bad.
            let head = [
                "",
                r#","head":"kernel""#,
                r#","head":"kernel","kernel_dilations":[1,2]"#,
                r#","head":"kernel","kernel_dilations":[1,2,4,8]"#,
                r#","head":"kernel","kernel_dilations":[]"#,
                r#","head":"kernel","kernel_dilations":[0,1]"#,
                r#","head":"kernel","kernel_dilations":[1,65]"#,
                r#","head":"kernel","kernel_dilations":[1,1,1,1,1,1,1,1,1]"#,
                r#","head":"kernel","kernel_dilations":[1e9]"#,
                r#","head":"kernel","kernel_dilations":"x""#,
                r#","head":"kernel","kernel_dilations":null"#,
                r#","kernel_dilations":[1,2]"#,
                r#","head":"pixel""#,
            ][rng.below(13)];
            HashMap::from([(
                META_CONFIG.to_string(),
                format!(r#"{{"width":{w},"blocks":{blocks},"aug_level":{aug}{head}}}"#),
            )])
        }
    };
    safetensors_bytes(&t, meta)
}

/// The input of case `case` of `target` (the same on every machine for one seed).
fn make_case(target: &str, seeds: &Seeds, seed: u64, case: usize) -> Vec<u8> {
    let tag = target
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(131).wrapping_add(b as u64));
    let mut rng =
        Rng(seed ^ tag.rotate_left(17) ^ (case as u64).wrapping_mul(0x2545_f491_4f6c_dd1d));
    rng.next();
    match target {
        "pickle" => {
            let mut p = seeds.pickles[rng.below(seeds.pickles.len())].clone();
            mutate(&mut rng, &mut p, &seeds.pickles, true, 0);
            p
        }
        "torch" => {
            let big = rng.chance(16);
            let pool = if big {
                &seeds.big_archives
            } else {
                &seeds.small_archives
            };
            let archive = &pool[rng.below(pool.len())];
            if rng.chance(2) {
                let mut a = archive.clone();
                mutate(&mut rng, &mut a, &[], false, 0);
                a
            } else {
                // Mutate the pickle, rebuild the archive (valid CRCs).
                let mut es = entries(archive);
                let i = es
                    .iter()
                    .position(|(n, _)| n.ends_with("/data.pkl"))
                    .unwrap();
                if !rng.chance(8) {
                    mutate(&mut rng, &mut es[i].1, &seeds.pickles, true, 0);
                }
                let deflate = rng.chance(4);
                let refs: Vec<(&str, &[u8], bool)> = es
                    .iter()
                    .map(|(n, b)| (n.as_str(), &b[..], deflate))
                    .collect();
                zip_bytes(&refs)
            }
        }
        "safetensors" => {
            let big = rng.chance(16);
            let pool = if big {
                &seeds.big_safetensors
            } else {
                &seeds.small_safetensors
            };
            let mut s = pool[rng.below(pool.len())].clone();
            if rng.chance(2) {
                mutate_header_json(&mut rng, &mut s);
            } else {
                let header = 8 + s
                    .get(..8)
                    .map(|h| u64::from_le_bytes(h.try_into().unwrap()) as usize)
                    .unwrap_or(0)
                    .min(s.len());
                mutate(&mut rng, &mut s, &[], false, header);
            }
            s
        }
        "config" => random_model_file(&mut rng),
        _ => unreachable!(),
    }
}

// ---------------------------------------------------------------------------------------------
// The campaign

fn crash_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz-crashes")
}

fn env_usize(name: &str) -> Option<usize> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn fuzz_the_weight_file_parsers() {
    let seed = env_usize("CLIPDENOISE_FUZZ_SEED").unwrap_or(13) as u64;
    let log = std::env::var_os("CLIPDENOISE_FUZZ_LOG").is_some();
    let only = std::env::var("CLIPDENOISE_FUZZ_ONLY").ok();
    let seeds = seeds();
    let mut crashes = Vec::new();
    // One line per panic (the input is saved), not a backtrace each.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| eprintln!("fuzz: panic: {info}")));
    let mut total = 0;
    let started = std::time::Instant::now();
    for (target, ci_cases) in CI_CASES {
        let cases: Vec<usize> = match &only {
            Some(o) => match o.split_once(':') {
                Some((t, c)) if t == target => vec![c.parse().unwrap()],
                _ => continue,
            },
            None => (0..env_usize("CLIPDENOISE_FUZZ_CASES").unwrap_or(ci_cases)).collect(),
        };
        let t0 = std::time::Instant::now();
        let mut outcomes = HashMap::new();
        for &case in &cases {
            let input = make_case(target, &seeds, seed, case);
            if log || only.is_some() {
                eprintln!("fuzz {target}:{case} ({} bytes)", input.len());
            }
            if only.is_some() {
                let p = crash_dir().join(format!("{target}-{seed}-{case}.bin"));
                std::fs::create_dir_all(crash_dir()).unwrap();
                std::fs::write(&p, &input).unwrap();
                eprintln!("input written to {}", p.display());
            }
            match catch_unwind(AssertUnwindSafe(|| run(target, &input))) {
                Ok(o) => *outcomes.entry(o).or_insert(0) += 1,
                Err(_) => {
                    std::fs::create_dir_all(crash_dir()).unwrap();
                    let p = crash_dir().join(format!("{target}-{seed}-{case}.bin"));
                    std::fs::write(&p, &input).unwrap();
                    crashes.push(p);
                }
            }
        }
        total += cases.len();
        let count = |o| outcomes.get(&o).copied().unwrap_or(0);
        eprintln!(
            "fuzz {target}: {} cases (seed {seed}) in {:.1} s: {} refused, {} parsed, {} built a model",
            cases.len(),
            t0.elapsed().as_secs_f64(),
            count(Outcome::Refused),
            count(Outcome::Parsed),
            count(Outcome::Model),
        );
    }
    std::panic::set_hook(default_hook);
    eprintln!(
        "fuzz: {total} cases in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        crashes.is_empty(),
        "{} inputs panicked (copy them to tests/fuzz-corpus/<target>/ once fixed): {crashes:#?}",
        crashes.len()
    );
}

/// Every input kept in tests/fuzz-corpus/<target>/ (crashes found so far, and the hostile
/// files of issue 13) still ends in `Ok` or a one-line error.
#[test]
fn fuzz_corpus_replays_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus");
    let mut n = 0;
    for target in ["pickle", "torch", "safetensors"] {
        let Ok(dir) = std::fs::read_dir(root.join(target)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = dir.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            let r = catch_unwind(AssertUnwindSafe(|| run(target, &bytes)));
            assert!(r.is_ok(), "{} panicked", f.display());
            n += 1;
        }
    }
    assert!(n >= 8, "the corpus has only {n} files");
}

/// Writes the hostile files of issue 13 into tests/fuzz-corpus/ (run once with `--ignored`;
/// the files are committed). tests/hostile_weights.rs checks their exact errors.
#[test]
#[ignore]
fn write_issue_13_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fuzz-corpus");
    let put = |target: &str, name: &str, bytes: &[u8]| {
        std::fs::create_dir_all(root.join(target)).unwrap();
        std::fs::write(root.join(target).join(name), bytes).unwrap();
    };
    let deflated_pickle = hostile::checkpoint_of_pickle;
    let zeros = |shape: &[i64]| Tensor::zeros(shape, (Kind::Float, Device::Cpu));
    let w2 = model_tensors(&tiny_config(2, [1, 1, 1]));

    // C1: a 0-dimensional encoder.conv3.weight.
    let mut t = w2.shallow();
    t.insert("encoder.conv3.weight".into(), zeros(&[]));
    put(
        "safetensors",
        "c1-scalar-conv3.safetensors",
        &safetensors_bytes(&t, HashMap::new()),
    );
    put("torch", "c1-scalar-conv3.pth", &torch_archive(&t));
    // C2: width 1024 from metadata, and inferred from a [1024, 1, 1, 1] tensor.
    let meta = HashMap::from([(
        META_CONFIG.to_string(),
        r#"{"width":1024,"blocks":[3,4,6],"aug_level":0.0}"#.to_string(),
    )]);
    put(
        "safetensors",
        "c2-metadata-width-1024.safetensors",
        &safetensors_bytes(&w2, meta),
    );
    let mut t = TensorMap::from([("encoder.conv3.weight".to_string(), zeros(&[1024, 1, 1, 1]))]);
    for layer in 1..=3 {
        t.insert(format!("encoder.layer{layer}.0.conv1.weight"), zeros(&[]));
    }
    put(
        "safetensors",
        "c2-inferred-width-1024.safetensors",
        &safetensors_bytes(&t, HashMap::new()),
    );
    put("torch", "c2-inferred-width-1024.pth", &torch_archive(&t));
    // D: a tuple nested 10^6 deep; lists nested by APPEND after placement; a self-cycle.
    put(
        "torch",
        "d-tuple-1e6-deep.pth",
        &deflated_pickle(&hostile::nested_tuples(1_000_000)),
    );
    put(
        "torch",
        "d-list-chain.pth",
        &deflated_pickle(&hostile::list_chain(20_000)),
    );
    put(
        "pickle",
        "d-self-cycle.pkl",
        b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s.",
    );
    // E: a zero-stride view, a size list shared by 20000 tensors, a million-copy pickle, a
    // zip bomb storage, 64 transposed views of one storage.
    put(
        "torch",
        "e-zero-stride-view.pth",
        &hostile::zero_stride_view(),
    );
    put(
        "torch",
        "e-shared-size-list.pth",
        &deflated_pickle(&hostile::shared_size_list()),
    );
    put(
        "torch",
        "e-million-copies.pth",
        &deflated_pickle(&hostile::million_copies()),
    );
    put("torch", "e-zip-bomb.pth", &hostile::zip_bomb(4 << 20));
    put(
        "torch",
        "e-many-views.pth",
        &hostile::strided_views(128, 64, true),
    );
    // F: one bit flipped in a storage of a width-2 model.
    let mut a = torch_archive(&w2);
    let (_, start, size) = support::stored_entries(&a)
        .into_iter()
        .find(|(name, _, size)| name.starts_with("m/data/") && *size > 64)
        .unwrap();
    a[start + size / 2] ^= 0x10;
    put("torch", "f-bit-flip.pth", &a);
}

trait Shallow {
    fn shallow(&self) -> TensorMap;
}

impl Shallow for TensorMap {
    fn shallow(&self) -> TensorMap {
        self.iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect()
    }
}
