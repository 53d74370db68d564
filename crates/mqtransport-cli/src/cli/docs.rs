//! `mqt docs`.

use std::process::ExitCode;

use anyhow::Context as _;
use mqtransport_cli::docs;

use super::args::DocsCommand;

pub(crate) async fn run_docs(command: DocsCommand) -> anyhow::Result<ExitCode> {
    match command {
        DocsCommand::Html { file, output } => {
            let page = docs::html(&docs::read(&file)?);
            match output {
                Some(path) => {
                    std::fs::write(&path, page).with_context(|| format!("cannot write '{}'", path.display()))?
                }
                None => print!("{page}"),
            }
        }
        DocsCommand::Serve { file, addr } => {
            docs::serve(&file, &addr, |bound| {
                eprintln!("serving {} at http://{bound}/ (ctrl-c to stop)", file.display());
            })
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
