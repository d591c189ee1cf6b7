//! Writes the synthetic dataset in CIFAR-10's binary layout (data_batch_1.bin, test_batch.bin),
//! e.g. to train a PyTorch reference on it:
//! `cargo run -p explr-data --release --example dump_synthetic -- OUT_DIR [SEED] [TRAIN] [TEST]`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = PathBuf::from(
        args.first()
            .ok_or("usage: dump_synthetic OUT_DIR [SEED] [TRAIN] [TEST]")?,
    );
    let num = |i: usize, d: usize| args.get(i).map_or(Ok(d), |s| s.parse());
    let cfg = explr_data::SyntheticConfig {
        seed: num(1, 0)? as u64,
        train_size: num(2, 10_000)?,
        test_size: num(3, 2_000)?,
        ..Default::default()
    };
    let data = explr_data::load_synthetic(&cfg)?;
    std::fs::create_dir_all(&out)?;
    for (file, split) in [
        ("data_batch_1.bin", data.train()),
        ("test_batch.bin", data.test()),
    ] {
        let mut bytes = Vec::with_capacity(split.len() * 3073);
        for i in 0..split.len() {
            bytes.push(split.label(i) as u8);
            bytes.extend_from_slice(split.image(i));
        }
        std::fs::write(out.join(file), bytes)?;
    }
    Ok(())
}
