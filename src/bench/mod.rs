//! `edgewatch bench`: the benchmark harness (scenarios S1–S6 of BENCHMARKS.md).

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("the benchmark harness is being written")
}
