//! Helpers shared by the CLI's integration tests. Every child process and every pipeline runs
//! under a watchdog: the binary under test and other programs ([`child`]), GStreamer in the
//! test process ([`pipeline`]). For the hostile-weights tests and the fuzz harness: a small
//! pickle writer, in-memory zip archives and a seeded random generator. Not every test uses
//! every helper.
#![allow(dead_code)]

pub mod child;
pub mod hostile;
pub mod job;
pub mod pipeline;
pub mod playable;

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

pub mod watchdog;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(name)
}

/// One tensor of a state dict: (name, storage key, storage elements, size, stride).
pub type Entry<'a> = (&'a str, &'a str, i64, &'a [i64], &'a [i64]);

/// Writes pickle opcodes (protocol 2), the subset torch.save uses.
pub struct Pickle(pub Vec<u8>);

impl Default for Pickle {
    fn default() -> Self {
        Pickle(b"\x80\x02".to_vec())
    }
}

impl Pickle {
    pub fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        self.0.push(b'X');
        self.0.extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.op(s.as_bytes())
    }

    pub fn int(&mut self, i: i32) -> &mut Self {
        self.0.push(b'J');
        self.op(&i.to_le_bytes())
    }

    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }

    pub fn ints(&mut self, v: &[i64]) -> &mut Self {
        self.op(b"(");
        for &i in v {
            self.int(i as i32);
        }
        self.op(b"t")
    }

    /// Push `_rebuild_tensor_v2(FloatStorage key/numel, offset, size, stride, False, None)`.
    pub fn tensor(
        &mut self,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.typed_tensor("FloatStorage", key, numel, offset, size, stride)
    }

    /// The same with another storage type (`LongStorage`, ...).
    pub fn typed_tensor(
        &mut self,
        storage: &str,
        key: &str,
        numel: i64,
        offset: i64,
        size: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2")
            .op(b"((")
            .str("storage")
            .global("torch", storage)
            .str(key)
            .str("cpu")
            .int(numel as i32)
            .op(b"tQ")
            .int(offset as i32)
            .ints(size)
            .ints(stride)
            .op(b"\x89NtR")
    }

    /// `{name: tensor}` for every `(name, key, numel, size, stride)`, then STOP.
    pub fn state_dict(entries: &[Entry]) -> Vec<u8> {
        let mut p = Pickle::default();
        p.op(b"}(");
        for (name, key, numel, size, stride) in entries {
            p.str(name).tensor(key, *numel, 0, size, stride);
        }
        p.op(b"u.");
        p.0
    }

    pub fn finish(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

/// A zip archive in memory; entries whose flag is true are deflated, the others stored.
pub fn zip_bytes(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, bytes, deflate) in entries {
        let method = if *deflate {
            zip::CompressionMethod::Deflated
        } else {
            zip::CompressionMethod::Stored
        };
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(method)
            .large_file(bytes.len() > u32::MAX as usize);
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap().into_inner()
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Little-endian f32 bytes of `n` zeros.
pub fn zeros_f32(n: usize) -> Vec<u8> {
    vec![0u8; n * 4]
}

/// The entries of a zip archive: (name, offset of its data in the file, size), for entries
/// stored uncompressed.
pub fn stored_entries(bytes: &[u8]) -> Vec<(String, usize, usize)> {
    let mut z = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = Vec::new();
    for i in 0..z.len() {
        let f = z.by_index_raw(i).unwrap();
        let h = f.header_start() as usize;
        let name_len = u16::from_le_bytes([bytes[h + 26], bytes[h + 27]]) as usize;
        let extra_len = u16::from_le_bytes([bytes[h + 28], bytes[h + 29]]) as usize;
        out.push((
            f.name().unwrap().into_owned(),
            h + 30 + name_len + extra_len,
            f.compressed_size() as usize,
        ));
    }
    out
}

/// splitmix64: a small seeded generator, the same on every machine and toolchain.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
}
