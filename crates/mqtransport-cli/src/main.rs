//! `mqt`: the mqtransport command line. Each command parses its arguments, calls the library
//! ([`mqtransport_cli`]) and prints, for people or as JSON (`--json`).

mod cli;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use mqtransport_cli::output::Output;

use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let out = Output::detect(cli.json);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, out)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{} {e}", out_err(&out, "error:"));
            for cause in e.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}

/// `label` in red when standard error is a terminal.
fn out_err(out: &Output, label: &str) -> String {
    if std::io::stderr().is_terminal() && !out.json {
        format!("\x1b[31m{label}\x1b[0m")
    } else {
        label.to_owned()
    }
}

async fn run(cli: Cli, out: Output) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Bench(args) => cli::bench::run_bench(&cli.url, args, out).await,
        Command::Publish(args) => cli::messages::run_publish(&cli.url, args, out).await,
        Command::Consume(args) => cli::messages::run_consume(&cli.url, args, out).await,
        Command::Dlq(command) => cli::dlq::run_dlq(&cli.url, command, out).await,
        Command::Topology(command) => cli::topology::run_topology(&cli.url, command, out).await,
        Command::Docs(command) => cli::docs::run_docs(command).await,
    }
}
