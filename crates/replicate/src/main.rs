//! The `explr` binary: placeholder until the runner issue lands.
fn main() -> anyhow::Result<()> {
    println!("explr: the runner is not built yet; see README.md");
    Ok(())
}
