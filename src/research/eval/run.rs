//! One evaluation run: the folders listed, every case of the synthetic grid and of the real
//! pairs scored (or only dumped), progress reported as events, the dump's manifest written.

use std::path::Path;
use std::time::Instant;

use tch::{Device, Kind, Tensor};

use super::folders::{file_name, folder_name, list_folder, list_pairs, unique_names, Folder};
use super::{
    image_seed, noise_slug, noisy_input, reference_255, DatasetReport, DumpCase, DumpManifest,
    EvalConfig, EvalReport, Event, ImageScore, NoiseLevel, NoiseRow, PairsReport, Scores, Shift,
};
use crate::error::{Error, Result};
use crate::inference::Denoiser;
use crate::research::imageio;
use crate::research::metrics;
use crate::research::noise::NoiseSpec;

/// Run the protocol on `cfg`'s folders; without a denoiser only the dump is written.
pub(super) fn run(
    denoiser: Option<&Denoiser>,
    cfg: &EvalConfig,
    on_event: impl FnMut(&Event),
) -> Result<EvalReport> {
    let start = Instant::now();
    let (datasets, pairs) = plan(cfg)?;
    let total = datasets
        .iter()
        .map(|d| d.images.len() * cfg.noises.len())
        .sum::<usize>()
        + pairs.iter().map(|p| p.images.len()).sum::<usize>();
    let mut run = Run {
        denoiser,
        cfg,
        dump: cfg.dump_noisy.as_deref(),
        manifest: DumpManifest {
            seed: cfg.seed,
            cases: Vec::new(),
        },
        done: 0,
        total,
        on_event,
    };
    (run.on_event)(&Event::Started { cases: total });
    let mut report = EvalReport {
        model: String::new(),
        device: String::new(),
        precision: String::new(),
        seed: cfg.seed,
        datasets: Vec::new(),
        pairs: Vec::new(),
        seconds: 0.0,
    };
    for ds in &datasets {
        report.datasets.push(run.dataset(ds)?);
    }
    for ps in &pairs {
        report.pairs.push(run.pairs(ps)?);
    }
    run.write_manifest()?;
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The folders of `cfg`, listed and checked: (datasets, pairs).
fn plan(cfg: &EvalConfig) -> Result<(Vec<Folder>, Vec<Folder>)> {
    if cfg.datasets.is_empty() && cfg.pairs.is_empty() {
        return Err(Error::Input(
            "nothing to evaluate: give a dataset or a pairs folder".into(),
        ));
    }
    if !cfg.datasets.is_empty() && cfg.noises.is_empty() {
        return Err(Error::Input("datasets need at least one noise spec".into()));
    }
    let datasets = cfg
        .datasets
        .iter()
        .map(|p| {
            let images = list_folder(p, cfg.limit)?
                .into_iter()
                .map(|i| (i, None))
                .collect();
            Ok(Folder {
                name: folder_name(p),
                path: p.clone(),
                images,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let pairs = cfg
        .pairs
        .iter()
        .map(|p| {
            Ok(Folder {
                name: folder_name(p),
                path: p.clone(),
                images: list_pairs(p, cfg.limit)?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if cfg.dump_noisy.is_some() {
        unique_names(datasets.iter().chain(pairs.iter()).map(|f| f.name.as_str()))?;
    }
    Ok((datasets, pairs))
}

/// The state of a run between cases.
struct Run<'a, F: FnMut(&Event)> {
    denoiser: Option<&'a Denoiser>,
    cfg: &'a EvalConfig,
    dump: Option<&'a Path>,
    manifest: DumpManifest,
    done: usize,
    total: usize,
    on_event: F,
}

impl<F: FnMut(&Event)> Run<'_, F> {
    /// Every image of a clean folder with every noise spec.
    fn dataset(&mut self, ds: &Folder) -> Result<DatasetReport> {
        let noises = &self.cfg.noises;
        (self.on_event)(&Event::Folder {
            name: ds.name.clone(),
            images: ds.images.len(),
            noises: noises.len(),
        });
        let mut rows: Vec<Vec<ImageScore>> = vec![Vec::new(); noises.len()];
        for (index, (path, _)) in ds.images.iter().enumerate() {
            self.synthetic_image(ds, index, path, &mut rows)?;
        }
        Ok(DatasetReport {
            name: ds.name.clone(),
            path: ds.path.clone(),
            images: ds.images.len(),
            rows: noises
                .iter()
                .zip(rows)
                .map(|(n, images)| NoiseRow {
                    noise: *n,
                    label: n.to_string(),
                    mean: Scores::mean(&images),
                    images,
                })
                .collect(),
        })
    }

    /// One clean image (the `index`-th of its folder) with every noise spec; each spec's
    /// score goes to its row.
    fn synthetic_image(
        &mut self,
        ds: &Folder,
        index: usize,
        path: &Path,
        rows: &mut [Vec<ImageScore>],
    ) -> Result<()> {
        let cfg = self.cfg;
        let name = file_name(path);
        let img = imageio::read(path)?;
        let x = img.to_tensor(Kind::Float)?;
        let reference = reference_255(&img)?;
        let clean_rel = format!("{}/clean/{name}.npy", ds.name);
        if let Some(dir) = self.dump {
            write_npy_in(dir, &clean_rel, &reference)?;
        }
        for (j, noise) in cfg.noises.iter().enumerate() {
            let seed = image_seed(cfg.seed, noise, index);
            let noisy = noisy_input(&x, noise, seed)?;
            if let Some(dir) = self.dump {
                let rel = format!("{}/{}/{name}.npy", ds.name, noise_slug(noise));
                write_npy_in(dir, &rel, &noisy)?;
                self.manifest.cases.push(DumpCase {
                    dataset: ds.name.clone(),
                    image: name.clone(),
                    noise: noise.to_string(),
                    seed: Some(seed),
                    noisy: rel,
                    clean: clean_rel.clone(),
                    height: img.height,
                    width: img.width,
                    round_output: false,
                });
            }
            let score = match self.denoiser {
                Some(d) => {
                    let out = d
                        .denoise(&noisy)?
                        .f_to_device(Device::Cpu)?
                        .f_to_kind(Kind::Double)?
                        * 255.0;
                    let noisy255 = noisy.f_to_kind(Kind::Double)? * 255.0;
                    let s = score(&name, Some(seed), &out, &noisy255, &reference)?;
                    rows[j].push(s.clone());
                    Some(s)
                }
                None => None,
            };
            self.case(&ds.name, name.clone(), Some(*noise), score);
        }
        Ok(())
    }

    /// Every pair of a real-noise folder.
    fn pairs(&mut self, ps: &Folder) -> Result<PairsReport> {
        (self.on_event)(&Event::Folder {
            name: ps.name.clone(),
            images: ps.images.len(),
            noises: 1,
        });
        let mut images = Vec::new();
        for (noisy_path, clean_path) in &ps.images {
            let clean_path = clean_path.as_ref().expect("pairs have a clean partner");
            let name = file_name(noisy_path);
            let score = self.pair(ps, &name, noisy_path, clean_path)?;
            images.extend(score.clone());
            self.case(&ps.name, name, None, score);
        }
        Ok(PairsReport {
            name: ps.name.clone(),
            path: ps.path.clone(),
            mean: Scores::mean(&images),
            images,
        })
    }

    /// One real pair: dumped if asked, scored with the output rounded to the clean image's
    /// levels (uint8 for 8-bit sets) when there is a model.
    fn pair(
        &mut self,
        ps: &Folder,
        name: &str,
        noisy_path: &Path,
        clean_path: &Path,
    ) -> Result<Option<ImageScore>> {
        let noisy_img = imageio::read(noisy_path)?;
        let clean_img = imageio::read(clean_path)?;
        if (noisy_img.width, noisy_img.height) != (clean_img.width, clean_img.height) {
            return Err(Error::Input(format!(
                "{}: {}x{} but its clean image is {}x{}",
                noisy_path.display(),
                noisy_img.width,
                noisy_img.height,
                clean_img.width,
                clean_img.height
            )));
        }
        let noisy = noisy_img.to_tensor(Kind::Float)?;
        let reference = reference_255(&clean_img)?;
        if let Some(dir) = self.dump {
            let clean_rel = format!("{}/clean/{name}.npy", ps.name);
            let rel = format!("{}/real/{name}.npy", ps.name);
            write_npy_in(dir, &clean_rel, &reference)?;
            write_npy_in(dir, &rel, &noisy)?;
            self.manifest.cases.push(DumpCase {
                dataset: ps.name.clone(),
                image: name.to_string(),
                noise: "real".into(),
                seed: None,
                noisy: rel,
                clean: clean_rel,
                height: noisy_img.height,
                width: noisy_img.width,
                round_output: true,
            });
        }
        let Some(d) = self.denoiser else {
            return Ok(None);
        };
        let levels = match clean_img.depth() {
            imageio::BitDepth::F32 => None,
            dep => Some(dep.max_value()),
        };
        let out = d
            .denoise(&noisy)?
            .f_to_device(Device::Cpu)?
            .f_to_kind(Kind::Double)?;
        let out = match levels {
            Some(m) => (out * m).f_round()? * (255.0 / m),
            None => out * 255.0,
        };
        let noisy255 = reference_255(&noisy_img)?;
        let mut s = score(name, None, &out, &noisy255, &reference)?;
        s.input_ssim = Some(metrics::ssim(&noisy255, &reference)?);
        s.noise_level = Some(NoiseLevel::measure(&noisy255, &reference)?);
        Ok(Some(s))
    }

    /// One case done: count it and report it.
    fn case(
        &mut self,
        folder: &str,
        image: String,
        noise: Option<NoiseSpec>,
        score: Option<ImageScore>,
    ) {
        self.done += 1;
        (self.on_event)(&Event::Case {
            folder: folder.to_string(),
            image,
            noise,
            score: score.map(Box::new),
            done: self.done,
            total: self.total,
        });
    }

    fn write_manifest(&self) -> Result<()> {
        let Some(dir) = self.dump else {
            return Ok(());
        };
        let bytes =
            serde_json::to_vec_pretty(&self.manifest).map_err(|e| Error::Input(e.to_string()))?;
        crate::weights::write_atomic(&dir.join("manifest.json"), &bytes)
    }
}

/// Scores of one output; `noisy255` is the input on the 0..255 scale.
fn score(
    name: &str,
    seed: Option<i64>,
    out255: &Tensor,
    noisy255: &Tensor,
    reference: &Tensor,
) -> Result<ImageScore> {
    Ok(ImageScore {
        image: name.to_string(),
        seed,
        psnr: metrics::psnr(out255, reference)?,
        ssim: metrics::ssim(out255, reference)?,
        input_psnr: metrics::psnr(noisy255, reference)?,
        input_ssim: None,
        shift: Shift::measure(out255, noisy255)?,
        noise_level: None,
    })
}

fn write_npy_in(root: &Path, rel: &str, x: &Tensor) -> Result<()> {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    imageio::write_npy(&path, x)
}
