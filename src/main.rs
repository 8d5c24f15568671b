use std::process::ExitCode;

use clap::Parser;
use stateset_voice::{
    cli::{run, Cli},
    config::LogFormat,
};

/// mimalloc: many small, short-lived allocations per request across worker threads.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let format = cli.config.log_format;
    stateset_voice::logging::init(format);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            match format {
                LogFormat::Text => eprintln!("error: {e}"),
                // A log shipper reading JSON lines gets the reason as one of them.
                LogFormat::Json => tracing::error!(error = %e, "exiting"),
            }
            ExitCode::from(2)
        }
    }
}
