//! Write a freshly initialised (untrained) model of a preset, e.g. to start a training run.
//! Usage: cargo run --release --example init_weights -- PRESET OUT.safetensors
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let cfg = clipdenoise::Config::preset(&args[1])?;
    let vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let _m = clipdenoise::ClipDenoise::new(&vs.root(), &cfg);
    let prov = clipdenoise::weights::Provenance {
        source: "untrained initialisation".into(),
        training_data: "none".into(),
        steps: 0,
    };
    clipdenoise::weights::save_model(std::path::Path::new(&args[2]), &vs, &cfg, &prov)?;
    Ok(())
}
