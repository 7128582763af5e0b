//! The hostile weight files of issue 13, built in memory: the tests in hostile_weights.rs
//! check each one's error, and fuzz.rs's `write_issue_13_corpus` writes them (some at a
//! smaller size) into tests/fuzz-corpus/ as seeds for the fuzz targets.

use super::{zeros_f32, zip_bytes, Entry, Pickle};

/// A checkpoint archive holding `pickle` as its deflated `data.pkl` (a few KB on disk
/// whatever the pickle's size).
pub fn checkpoint_of_pickle(pickle: &[u8]) -> Vec<u8> {
    zip_bytes(&[("a/data.pkl", pickle, true)])
}

/// `(((...(),),)...)`: the empty tuple, then TUPLE1 `depth` times.
pub fn nested_tuples(depth: usize) -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(b")").op(&vec![0x85; depth]);
    p.finish()
}

/// `l0 = []; l_i = []; l_{i-1}.append(l_i)` for i in 1..n: each list is filled after it was
/// placed in its parent, so depths recorded at placement would be wrong.
pub fn list_chain(n: u32) -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(b"]r\x00\x00\x00\x00");
    for i in 1..n {
        p.op(b"j").op(&(i - 1).to_le_bytes());
        p.op(b"]r").op(&i.to_le_bytes()).op(b"a0");
    }
    p.op(b"j\x00\x00\x00\x00");
    p.finish()
}

/// A list of 60000 ints (memo 0) used as the size and stride of 20000 tensors of one
/// one-float storage: copying it for each would take 19 GB from a 1 MB pickle.
pub fn shared_size_list() -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(b"]q\x00(").op(&b"K\x01".repeat(60_000)).op(b"e0");
    // memo 1: the rebuild function; memo 2: a one-float storage.
    p.global("torch._utils", "_rebuild_tensor_v2")
        .op(b"q\x010(");
    p.str("storage").global("torch", "FloatStorage");
    p.str("0").str("cpu").int(1).op(b"tQq\x020}(");
    for i in 0..20_000 {
        p.str(&format!("t{i}"))
            .op(b"h\x01(h\x02K\x00h\x00h\x00\x89NtR");
    }
    p.op(b"u");
    p.finish()
}

/// A list of five tuples of a million references each to one value (DUP): a 5 MB pickle
/// that needs 80 MB.
pub fn million_copies() -> Vec<u8> {
    let mut p = Pickle::default();
    p.op(b"]");
    for _ in 0..5 {
        p.op(b"()").op(&vec![b'2'; 999_000]).op(b"ta");
    }
    p.finish()
}

/// One stored float viewed as [16384, 16384] with strides [0, 0]: 1 GB once copied.
pub fn zero_stride_view() -> Vec<u8> {
    let pickle = Pickle::state_dict(&[("w", "0", 1, &[16384, 16384], &[0, 0])]);
    zip_bytes(&[
        ("a/data.pkl", &pickle, false),
        ("a/data/0", &zeros_f32(1), false),
    ])
}

/// `n` zeros (4n bytes) deflated to a few KB, as the storage of one [n] tensor.
pub fn zip_bomb(n: i64) -> Vec<u8> {
    let pickle = Pickle::state_dict(&[("w", "0", n, &[n], &[1])]);
    zip_bytes(&[
        ("a/data.pkl", &pickle, false),
        ("a/data/0", &zeros_f32(n as usize), true),
    ])
}

/// One n x n float storage and `views` transposed views of it (each needs its own copy);
/// the storage deflated if `deflate`.
pub fn strided_views(n: i64, views: usize, deflate: bool) -> Vec<u8> {
    let (size, stride) = ([n, n], [1, n]);
    let names: Vec<String> = (0..views).map(|i| format!("t{i}")).collect();
    let entries: Vec<Entry> = names
        .iter()
        .map(|name| (name.as_str(), "0", n * n, &size[..], &stride[..]))
        .collect();
    let pickle = Pickle::state_dict(&entries);
    zip_bytes(&[
        ("a/data.pkl", &pickle, false),
        ("a/data/0", &zeros_f32((n * n) as usize), deflate),
    ])
}
