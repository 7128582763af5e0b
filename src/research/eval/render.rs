//! The report as text: one Markdown table of the synthetic grid (and one of real pairs, with
//! the output's shift against its input), or plain per-folder tables (with the shift).

use super::EvalReport;

impl EvalReport {
    /// One Markdown table of the synthetic grid (rows: noise specs; columns: PSNR and SSIM per
    /// dataset), then one for real pairs if any.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        if !self.datasets.is_empty() {
            s.push_str("| Noise |");
            for d in &self.datasets {
                s.push_str(&format!(" {0} PSNR | {0} SSIM |", d.name));
            }
            s.push_str("\n|---|");
            s.push_str(&"---:|---:|".repeat(self.datasets.len()));
            s.push('\n');
            for label in self.row_labels() {
                s.push_str(&format!("| {label} |"));
                for d in &self.datasets {
                    match d.rows.iter().find(|r| r.label == label) {
                        Some(r) => {
                            s.push_str(&format!(" {:.2} | {:.4} |", r.mean.psnr, r.mean.ssim))
                        }
                        None => s.push_str(" – | – |"),
                    }
                }
                s.push('\n');
            }
        }
        if !self.pairs.is_empty() {
            if !s.is_empty() {
                s.push('\n');
            }
            s.push_str(
                "| Real pairs | Images | noisy PSNR | PSNR | noisy SSIM | SSIM | mean shift R/G/B | \
                 low-pass shift R/G/B |\n\
                 |---|---:|---:|---:|---:|---:|---:|---:|\n",
            );
            for p in &self.pairs {
                s.push_str(&format!(
                    "| {} | {} | {:.2} | {:.2} | {:.4} | {:.4} | {} | {} |\n",
                    p.name,
                    p.images.len(),
                    p.mean.input_psnr,
                    p.mean.psnr,
                    p.mean.input_ssim.unwrap_or(f64::NAN),
                    p.mean.ssim,
                    signed3(&p.mean.shift.mean),
                    plain3(&p.mean.shift.lowpass),
                ));
            }
        }
        s
    }

    /// Plain text: one table per dataset (and per pairs folder), with the noisy input's PSNR.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for d in &self.datasets {
            s.push_str(&format!("{} ({} images)\n", d.name, d.images));
            s.push_str(&format!(
                "  {:<16} {:>8} {:>8} {:>11} {:>20} {:>20}\n",
                "noise", "PSNR", "SSIM", "input PSNR", "mean shift R/G/B", "low-pass shift"
            ));
            for r in &d.rows {
                s.push_str(&format!(
                    "  {:<16} {:>8.2} {:>8.4} {:>11.2} {:>20} {:>20}\n",
                    r.label,
                    r.mean.psnr,
                    r.mean.ssim,
                    r.mean.input_psnr,
                    signed3(&r.mean.shift.mean),
                    plain3(&r.mean.shift.lowpass)
                ));
            }
            s.push('\n');
        }
        for p in &self.pairs {
            s.push_str(&format!("{} ({} real pairs)\n", p.name, p.images.len()));
            s.push_str(&format!(
                "  {:<16} {:>8} {:>8} {:>11} {:>20} {:>20}\n",
                "", "PSNR", "SSIM", "input PSNR", "mean shift R/G/B", "low-pass shift"
            ));
            s.push_str(&format!(
                "  {:<16} {:>8.2} {:>8.4} {:>11.2} {:>20} {:>20}\n",
                "real",
                p.mean.psnr,
                p.mean.ssim,
                p.mean.input_psnr,
                signed3(&p.mean.shift.mean),
                plain3(&p.mean.shift.lowpass)
            ));
            let levels: Vec<_> = p.images.iter().filter_map(|i| i.noise_level).collect();
            if !levels.is_empty() {
                let n = levels.len() as f64;
                let mean = |f: &dyn Fn(&super::NoiseLevel, usize) -> f64| -> [f64; 3] {
                    [0, 1, 2].map(|c| levels.iter().map(|l| f(l, c)).sum::<f64>() / n)
                };
                let est = mean(&|l, c| l.estimated[c]);
                let act = mean(&|l, c| l.actual[c]);
                let err = mean(&|l, c| (l.estimated[c] / l.actual[c] - 1.0).abs() * 100.0);
                s.push_str(&format!(
                    "  noise sigma R/G/B: true {}, estimated {}, mean |error| {:.0}/{:.0}/{:.0} %\n\n",
                    plain3(&act),
                    plain3(&est),
                    err[0],
                    err[1],
                    err[2]
                ));
            }
        }
        s
    }

    /// Noise labels in first-seen order over the datasets.
    fn row_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in self.datasets.iter().flat_map(|d| &d.rows) {
            if !v.contains(&r.label) {
                v.push(r.label.clone());
            }
        }
        v
    }
}

/// `+1.02/+2.16/+0.95`: a signed shift per channel.
fn signed3(v: &[f64; 3]) -> String {
    format!("{:+.2}/{:+.2}/{:+.2}", v[0], v[1], v[2])
}

/// `0.84/1.90/0.71`: a magnitude per channel.
fn plain3(v: &[f64; 3]) -> String {
    format!("{:.2}/{:.2}/{:.2}", v[0], v[1], v[2])
}
