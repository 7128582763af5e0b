//! The examples' command lines: `--name value` pairs, and `--size WxH`.

use std::str::FromStr;

/// The program's arguments as `(--name, value)` pairs; a name without a value is an error.
pub fn pairs() -> Result<Vec<(String, String)>, String> {
    let mut it = std::env::args().skip(1);
    let mut out = Vec::new();
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k} needs a value"))?;
        out.push((k, v));
    }
    Ok(out)
}

/// `WxH` as (width, height).
pub fn size<T: FromStr>(v: &str) -> Result<(T, T), String> {
    let (w, h) = v.split_once('x').ok_or("--size WxH")?;
    let w = w.parse().map_err(|_| format!("bad width in {v}"))?;
    let h = h.parse().map_err(|_| format!("bad height in {v}"))?;
    Ok((w, h))
}
