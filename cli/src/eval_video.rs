//! `clipdenoise eval-video`: the compressed-video evaluation. Clean clips are decoded, filmed
//! by a seeded camera (`clipdenoise::research::video_eval`), encoded with x264 at each CRF and decoded
//! through GStreamer, denoised by the real `clipdenoise` element, and scored against the clean
//! frames (PSNR RGB and Y, SSIM, temporal-stability error), next to the noisy input's scores.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clipdenoise::inference::Precision;
use clipdenoise::research::eval::Shift;
use clipdenoise::research::imageio::{self, BitDepth};
use clipdenoise::research::noise::IspNoise;
use clipdenoise::research::unbias::unbiased_frames;
use clipdenoise::research::video_eval::{self, VideoScore};

use crate::gst_frames;
use crate::models::RefineArgs;
use gst::prelude::*;
use serde::Serialize;
use tch::{Kind, Tensor};

#[derive(clap::Args)]
#[command(after_help = "Example (the table in weights/README.md):\n  \
    clipdenoise eval-video ../shared/data/video-DAVIS-bear/bear.mp4 \\\n    \
    ../shared/data/video-sam2-bedroom/bedroom.mp4 --crf 18,23,28 --markdown\n\n\
    Each clip's first --frames frames are decoded to RGB, filmed by one camera drawn from\n\
    --seed and the clip's file name (Poisson-Gaussian raw noise at --shot, Bayer demosaic,\n\
    white balance, colour matrix, gamma 2.2 and tone curve, chroma noise reduction), each frame\n\
    with its own seeded noise; then I420 with the sides rounded up to multiples of 16 (the last\n\
    row and column repeated) and x264 on one thread (pass=qual quantizer=CRF, i.e. CRF, with\n\
    bitrate=2048000 so that x264enc's default 2 Mbit/s VBV cap does not override the CRF; the\n\
    --preset speed preset, keyframe every 30 frames), avdec_h264, cropped back, and the\n\
    clipdenoise element. x264 read memory it had not written (past frames of other sizes, and\n\
    with two threads), so the same seeded clip coded differently from run to run; the padding\n\
    and the single threads remove most of that (weights/README.md says what is left).\n\
    Scores are means over the frames against the reference frames: PSNR on RGB and on BT.601\n\
    luma, MATLAB-style SSIM, and the temporal error mean|(f_t - f_t-1) - (c_t - c_t-1)| (0..255).\n\
    The reference (--reference unbiased, the default) is each clean frame plus the mean of\n\
    decoded noisy - clean of the clip at that CRF, per channel and brightness, so that the\n\
    noisy clip is unbiased (the camera's gamma, tone curve and clipping move it by up to a\n\
    few levels at some brightnesses; before 2026-12-07's later fix GStreamer's YUV-to-RGB\n\
    conversion also made it 3-5 levels darker, which rewarded brightening: YUV now reaches\n\
    RGB through the library's exact converter with the caps' colorimetry); --reference clean\n\
    scores against the clean frames (issue 23; weights/README.md says which tables used\n\
    which). --dump also writes crfN-reference/. Both print each CRF's mean shifts per\n\
    channel: decoded noisy - clean and denoised - decoded noisy.\n\
    --dump DIR writes the clean and the decoded noisy frames as PNG for\n\
    tools/classical_video.py; --keep-encoded DIR the encoded noisy clips (samples/make-sample.sh).")]
pub struct Args {
    /// Clean video files
    #[arg(required = true, value_name = "CLIP")]
    clips: Vec<PathBuf>,
    /// x264 constant-quality levels (CRF)
    #[arg(long, value_delimiter = ',', default_value = "18,23,28",
          value_parser = clap::value_parser!(u32).range(0..=50))]
    crf: Vec<u32>,
    /// Frames per clip (from the start)
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(2..))]
    frames: u64,
    /// Shot-noise gain of the camera (linear raw variance = shot * x + read)
    #[arg(long, default_value_t = 0.004)]
    shot: f64,
    /// Base seed of the cameras and the noise
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// x264 speed preset
    #[arg(long, default_value = "medium")]
    preset: String,
    /// Scale the clips to this width first (Lanczos, aspect kept)
    #[arg(long, value_parser = clap::value_parser!(u32).range(16..=8192))]
    width: Option<u32>,
    /// What the frames are scored against: `unbiased` (the clean frames plus the decoded
    /// noisy clip's mean bias per channel and brightness, per CRF) or `clean` (the clean
    /// frames, as before issue 23)
    #[arg(long, value_enum, default_value = "unbiased")]
    reference: Reference,
    /// Weights file, or `default` for the built-in model (as the element's `model`)
    #[arg(long, short, default_value = "default", help_heading = "Model")]
    model: String,
    /// Device: auto, cpu, cuda, cuda:N
    #[arg(long, default_value = "auto", help_heading = "Model")]
    device: String,
    /// Arithmetic: fp32, bf16, fp16 (CUDA only), auto (the faster; fp32 stays the default
    /// here so that quality figures do not depend on the machine's speed)
    #[arg(long, default_value = "fp32", help_heading = "Model")]
    precision: Precision,
    /// The element's temporal smoothing, 0..1 (default: the element's default)
    #[arg(long, value_name = "AMOUNT", value_parser = crate::models::parse_strength, help_heading = "Model")]
    temporal: Option<f64>,
    /// The element's lookahead (offline mode: frames each frame waits for; 0: causal)
    #[arg(
        long,
        value_name = "FRAMES",
        default_value_t = 0,
        help_heading = "Model"
    )]
    lookahead: u32,
    /// Also remove coarse grain (low light, phones): a first pass on the frame's four
    /// pixel-shuffled half-size sub-images, then the usual one. Twice the compute; on
    /// fine-grained noise it loses detail (weights/README.md)
    #[arg(long, help_heading = "Model")]
    coarse_grain: bool,
    #[command(flatten)]
    refine: RefineArgs,
    /// Print JSON
    #[arg(long, conflicts_with = "markdown", help_heading = "Output")]
    json: bool,
    /// Print a Markdown table
    #[arg(long, help_heading = "Output")]
    markdown: bool,
    /// Write DIR/<clip>/clean/NNNN.png and DIR/<clip>/crfN/NNNN.png (decoded noisy frames)
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    dump: Option<PathBuf>,
    /// Also keep the encoded noisy clips as DIR/<clip>-crfN.mp4 (coded with their sides rounded
    /// up to multiples of 16, the last row and column repeated)
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    keep_encoded: Option<PathBuf>,
}

/// The frames the clips are scored against.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Reference {
    Unbiased,
    Clean,
}

/// One clip at one CRF.
#[derive(Debug, Clone, Serialize)]
struct Row {
    clip: String,
    crf: u32,
    noisy: VideoScore,
    denoised: VideoScore,
    /// The decoded noisy frames against the clean ones (camera, x264, colour conversions).
    noisy_bias: Shift,
    /// The denoised frames against their decoded noisy input (the model's brightness and
    /// colour shift).
    denoised_shift: Shift,
}

#[derive(Debug, Clone, Serialize)]
struct Report {
    model: String,
    shot: f64,
    seed: u64,
    frames: u64,
    preset: String,
    reference: Reference,
    rows: Vec<Row>,
    /// Means over the clips, per CRF.
    means: Vec<Row>,
    seconds: f64,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::video::init_gstreamer()?;
    if gst::ElementFactory::find("x264enc").is_none()
        || gst::ElementFactory::find("avdec_h264").is_none()
    {
        bail!("eval-video needs x264enc and avdec_h264 (gstreamer1.0-plugins-ugly, gstreamer1.0-libav)");
    }
    let start = Instant::now();
    let camera = video_eval::video_camera(args.shot);
    camera.validate()?;
    let mut rows = Vec::new();
    for path in &args.clips {
        rows.extend(clip_rows(path, &args, &camera)?);
    }
    let means = means_per_crf(&rows, &args.crf);
    let report = Report {
        model: args.model.clone(),
        shot: args.shot,
        seed: args.seed,
        frames: args.frames,
        preset: args.preset.clone(),
        reference: args.reference,
        rows,
        means,
        seconds: start.elapsed().as_secs_f64(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", to_markdown(&report, args.markdown));
    }
    eprintln!("{:.1} s", report.seconds);
    Ok(())
}

/// One clip: decoded, camera noise added, then per CRF encoded, decoded and denoised; the
/// scores of each CRF.
fn clip_rows(path: &Path, args: &Args, camera: &IspNoise) -> anyhow::Result<Vec<Row>> {
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "clip".into());
    let clean = decode_rgb(path, args.frames as usize, args.width)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let seed = video_eval::seed_of(&format!("{}/{name}", args.seed));
    let noisy = video_eval::noisy_clip(&clean, camera, seed)?;
    if let Some(dir) = &args.dump {
        dump_frames(&dir.join(&name).join("clean"), &clean)?;
    }
    let mut rows = Vec::new();
    for &crf in &args.crf {
        eprintln!("{name}: {} frames, CRF {crf}", clean.len());
        let keep = match &args.keep_encoded {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                Some(dir.join(format!("{name}-crf{crf}.mp4")))
            }
            None => None,
        };
        let (decoded, denoised) = encode_and_denoise(&noisy, crf, args, keep.as_deref())?;
        if let Some(dir) = &args.dump {
            dump_frames(&dir.join(&name).join(format!("crf{crf}")), &decoded)?;
        }
        // The unbiased reference: the clean frames plus the mean bias of this CRF's decoded
        // noisy frames (camera, x264 and colour conversions), per channel and brightness.
        let reference = match args.reference {
            Reference::Unbiased => unbiased_frames(&clean, &decoded)?,
            Reference::Clean => clean.iter().map(|t| t.shallow_clone()).collect(),
        };
        if let (Some(dir), Reference::Unbiased) = (&args.dump, args.reference) {
            dump_frames(
                &dir.join(&name).join(format!("crf{crf}-reference")),
                &reference,
            )?;
        }
        let row = Row {
            clip: name.clone(),
            crf,
            noisy: video_eval::score_clip(&reference, &decoded)?,
            denoised: video_eval::score_clip(&reference, &denoised)?,
            noisy_bias: clip_shift(&decoded, &clean)?,
            denoised_shift: clip_shift(&denoised, &decoded)?,
        };
        eprintln!(
            "  noisy {:.2} dB (Y {:.2}), clipdenoise {:.2} dB (Y {:.2})",
            row.noisy.psnr, row.noisy.psnr_y, row.denoised.psnr, row.denoised.psnr_y
        );
        eprintln!("  {}", shifts_line(&row));
        rows.push(row);
    }
    Ok(rows)
}

/// The mean row of each CRF over the clips.
fn means_per_crf(rows: &[Row], crfs: &[u32]) -> Vec<Row> {
    crfs.iter()
        .map(|&crf| {
            let r: Vec<&Row> = rows.iter().filter(|r| r.crf == crf).collect();
            Row {
                clip: "mean".into(),
                crf,
                noisy: mean(r.iter().map(|r| &r.noisy)),
                denoised: mean(r.iter().map(|r| &r.denoised)),
                noisy_bias: Shift::mean_of(r.iter().map(|r| &r.noisy_bias)),
                denoised_shift: Shift::mean_of(r.iter().map(|r| &r.denoised_shift)),
            }
        })
        .collect()
}

/// The mean shift of frames `out` against `input` (RGB u8 (3, H, W)), frame by frame.
fn clip_shift(out: &[Tensor], input: &[Tensor]) -> anyhow::Result<Shift> {
    let per_frame = out
        .iter()
        .zip(input)
        .map(|(o, i)| {
            let f = |t: &Tensor| t.to_kind(Kind::Float).unsqueeze(0);
            Shift::measure(&f(o), &f(i))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Shift::mean_of(per_frame.iter()))
}

/// The mean shifts of a row per channel (levels of 255): decoded noisy - clean, denoised -
/// decoded noisy.
fn shifts_line(row: &Row) -> String {
    let f = |v: [f64; 3]| format!("{:+.2} / {:+.2} / {:+.2}", v[0], v[1], v[2]);
    format!(
        "mean shift R/G/B: decoded noisy - clean {}, denoised - decoded noisy {}",
        f(row.noisy_bias.mean),
        f(row.denoised_shift.mean)
    )
}

fn mean<'a>(scores: impl Iterator<Item = &'a VideoScore>) -> VideoScore {
    let v: Vec<&VideoScore> = scores.collect();
    let n = v.len().max(1) as f64;
    VideoScore {
        psnr: v.iter().map(|s| s.psnr).sum::<f64>() / n,
        psnr_y: v.iter().map(|s| s.psnr_y).sum::<f64>() / n,
        ssim: v.iter().map(|s| s.ssim).sum::<f64>() / n,
        temporal: v.iter().map(|s| s.temporal).sum::<f64>() / n,
        frames: v.iter().map(|s| s.frames).sum(),
    }
}

fn to_markdown(r: &Report, markdown: bool) -> String {
    let mut s = String::new();
    if !markdown {
        s.push_str(&format!(
            "model {}, camera shot {}, seed {}, {} frames, x264 {}, reference {:?}\n",
            r.model, r.shot, r.seed, r.frames, r.preset, r.reference
        ));
    }
    s.push_str(
        "| Clip | CRF | noisy PSNR | ours PSNR | noisy Y | ours Y | noisy SSIM | ours SSIM | noisy temporal | ours temporal |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for row in r.rows.iter().chain(&r.means) {
        let (n, d) = (&row.noisy, &row.denoised);
        s.push_str(&format!(
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {:.4} | {:.4} | {:.3} | {:.3} |\n",
            row.clip,
            row.crf,
            n.psnr,
            d.psnr,
            n.psnr_y,
            d.psnr_y,
            n.ssim,
            d.ssim,
            n.temporal,
            d.temporal
        ));
    }
    if !markdown {
        for row in &r.means {
            s.push_str(&format!("CRF {}: {}\n", row.crf, shifts_line(row)));
        }
    }
    s
}

/// The first `frames` frames of a video as RGB u8 (3, H, W), cropped to even sizes.
fn decode_rgb(path: &Path, frames: usize, width: Option<u32>) -> anyhow::Result<Vec<Tensor>> {
    let scale = match width {
        Some(w) => {
            format!("videoscale method=lanczos ! video/x-raw,width={w},pixel-aspect-ratio=1/1 ! ")
        }
        None => String::new(),
    };
    // YUV stays YUV up to the appsink (the library converts it, not videoconvert: issue 23).
    let desc = format!(
        "filesrc location=\"{}\" ! decodebin ! videoconvert ! {} ! {scale}\
         appsink name=sink sync=false max-buffers=4",
        path.display().to_string().replace('"', "\\\""),
        gst_frames::DECODED
    );
    let pipeline = gst_frames::launch(&desc)?;
    let sink = gst_frames::appsink(&pipeline, "sink")?;
    let bus = pipeline.bus().context("no bus")?;
    pipeline.set_state(gst::State::Playing)?;
    let mut out = Vec::new();
    let result = (|| {
        while out.len() < frames {
            let Some(s) = gst_frames::pull(&sink, &bus)? else {
                break;
            };
            let t = gst_frames::sample_to_tensor(&s)?;
            let (h, w) = (t.size()[1] / 2 * 2, t.size()[2] / 2 * 2);
            out.push(t.narrow(1, 0, h).narrow(2, 0, w).contiguous());
        }
        anyhow::Ok(())
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    if out.len() < 2 {
        bail!("fewer than 2 frames decoded");
    }
    Ok(out)
}

/// Encode `frames` with x264 at `crf`, decode, and denoise with the element: returns the
/// decoded noisy frames and the denoised ones (RGB u8).
fn encode_and_denoise(
    frames: &[Tensor],
    crf: u32,
    args: &Args,
    keep: Option<&Path>,
) -> anyhow::Result<(Vec<Tensor>, Vec<Tensor>)> {
    let (h, w) = (frames[0].size()[1], frames[0].size()[2]);
    let (ph, pw) = gst_frames::macroblock_padded(&frames[0]);
    let keep = match keep {
        Some(p) => format!(
            "enc. ! queue ! h264parse ! mp4mux faststart=true ! filesink location=\"{}\" ",
            p.display().to_string().replace('"', "\\\"")
        ),
        None => String::new(),
    };
    let desc = format!(
        "appsrc name=src format=time max-bytes=0 ! \
         x264enc pass=qual quantizer={crf} bitrate=2048000 speed-preset={} key-int-max=30 threads=1 ! \
         tee name=enc {keep} enc. ! queue ! h264parse ! avdec_h264 max-threads=1 ! videocrop right={} bottom={} ! tee name=t \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! appsink name=noisy sync=false \
         t. ! queue max-size-buffers=0 max-size-bytes=0 max-size-time=0 ! \
           clipdenoise name=den batch-size=1 ! appsink name=out sync=false",
        args.preset,
        pw - w,
        ph - h,
    );
    // Converted before the pipeline, padded to whole macroblocks (gst_frames::MACROBLOCK); the
    // decoded and the denoised I420 frames are converted to RGB by gst_frames (issue 23).
    let (i420, caps) = gst_frames::i420_buffers(frames, 30)?;
    let pipeline = gst_frames::launch(&desc)?;
    let den = pipeline.by_name("den").context("no element")?;
    den.set_property("model", &args.model);
    den.set_property("device", &args.device);
    den.set_property_from_str("precision", &args.precision.to_string());
    if let Some(t) = args.temporal {
        den.set_property("temporal", t);
    }
    den.set_property("coarse-grain", args.coarse_grain);
    den.set_property("refine", args.refine.refine.to_string());
    den.set_property("lookahead", args.lookahead);
    let src = gst_frames::appsrc(&pipeline, "src")?;
    src.set_caps(Some(&caps));
    let noisy_sink = gst_frames::appsink(&pipeline, "noisy")?;
    let out_sink = gst_frames::appsink(&pipeline, "out")?;
    let bus = pipeline.bus().context("no bus")?;
    pipeline.set_state(gst::State::Playing).map_err(|_| {
        anyhow::anyhow!("the pipeline cannot start (x264enc, avdec_h264, clipdenoise?)")
    })?;
    let result = (|| {
        for buf in i420 {
            src.push_buffer(buf)?;
        }
        src.end_of_stream()?;
        let mut noisy = Vec::new();
        let mut out = Vec::new();
        // Both branches hold every frame (unbounded queues), so draining one then the other
        // cannot deadlock.
        while let Some(s) = gst_frames::pull(&noisy_sink, &bus)? {
            noisy.push(gst_frames::sample_to_tensor(&s)?);
        }
        while let Some(s) = gst_frames::pull(&out_sink, &bus)? {
            out.push(gst_frames::sample_to_tensor(&s)?);
        }
        if noisy.len() != frames.len() || out.len() != frames.len() {
            bail!(
                "{} frames in, {} decoded, {} denoised",
                frames.len(),
                noisy.len(),
                out.len()
            );
        }
        anyhow::Ok((noisy, out))
    })();
    let _ = pipeline.set_state(gst::State::Null);
    result
}

fn dump_frames(dir: &Path, frames: &[Tensor]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (i, f) in frames.iter().enumerate() {
        let x = f.to_kind(Kind::Float).unsqueeze(0) / 255.0;
        imageio::save(&dir.join(format!("{i:04}.png")), &x, BitDepth::U8)?;
    }
    Ok(())
}
