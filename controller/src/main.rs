//! `faultline`: the command line and the controller daemon. It drives one agent
//! directly (`faultline --agent URL ...`) or many through a controller
//! (`faultline --controller URL ...`, `faultline controller serve`).

mod agent_cli;
mod analyze;
mod controller_cli;
mod kernel_watch;
mod load;
mod load_cli;
mod observe;
mod partition;
mod report;
mod scenario;
mod scenario_run;
mod server;
mod store;
mod units;

use anyhow::Result;
use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = agent_cli::Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: agent_cli::Cli) -> Result<()> {
    agent_cli::run(cli).await
}
