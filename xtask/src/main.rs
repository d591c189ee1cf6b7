//! `cargo xtask`: placeholder until the runner issue lands.
fn main() -> anyhow::Result<()> {
    println!("xtask: nothing to run yet");
    Ok(())
}
