//! `chatd scaletest` (being written).

#[derive(clap::Args, Debug)]
pub struct ScaletestArgs {
    /// API base URLs; clients are spread over them.
    #[arg(
        long = "api",
        env = "CHATD_SCALETEST_API",
        value_delimiter = ',',
        required = true
    )]
    pub api: Vec<String>,
}

pub async fn run(_args: ScaletestArgs) -> anyhow::Result<()> {
    anyhow::bail!("scaletest is not built yet")
}
