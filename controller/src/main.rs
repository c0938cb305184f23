//! `faultline`: the command line and the controller daemon. It drives one agent
//! directly (`faultline --agent URL ...`) or many through a controller
//! (`faultline --controller URL ...`, `faultline controller serve`).

#[cfg(test)]
mod architecture;
mod cli;
mod daemon;
mod faults;
#[cfg(test)]
mod fuzz_tests;
mod kube;
mod lab;
mod load;
mod localfile;
mod probe;
mod remote;
mod report;
mod run;
mod table;
mod targeting;
mod units;

use anyhow::Result;

fn main() -> std::process::ExitCode {
    // `faultline events --follow | head` closes stdout under us: end quietly like other
    // Unix tools (status 141, as if killed by SIGPIPE) instead of a panic and a backtrace.
    // SIGPIPE itself stays ignored, or a peer resetting a TCP connection would kill us.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.payload().downcast_ref::<String>().map_or("", String::as_str);
        // std's println! and clap_complete's writer say it in these two ways.
        if (text.starts_with("failed printing to stdout") && text.contains("Broken pipe"))
            || (text.starts_with("failed to write completion") && text.contains("BrokenPipe"))
        {
            std::process::exit(141);
        }
        default_hook(info);
    }));
    let matches = cli::command().get_matches();
    let mut cli =
        <cli::Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) =
        cli.settle_endpoints(matches.value_source("agent"), matches.value_source("controller"))
    {
        eprintln!("error: {e}");
        return std::process::ExitCode::from(2);
    }
    // A command is one request and its answer: one thread starts fastest. The controller
    // daemon serves hundreds of agents and callers at once and gets every core.
    let runtime = if cli.is_daemon() {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: cli::Cli) -> Result<()> {
    cli::run(cli).await
}
