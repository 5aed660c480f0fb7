//! `cargo xtask bench` (being written).
pub fn run(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("cargo xtask bench is not written yet")
}
