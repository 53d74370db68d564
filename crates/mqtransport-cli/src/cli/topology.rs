//! `mqt topology`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};

use mqtransport::transport::Transport as _;
use mqtransport_cli::output::Output;
use mqtransport_cli::topology::{Format, Management, TopologyFile};
use mqtransport_cli::{broker, topology};
use serde_json::json;

use super::args::{FormatArg, TopologyCommand};
use super::note_embedded;

/// The management API a topology command reads: the one given, else the default next to the
/// AMQP listener; and the virtual host of the broker URL.
pub(crate) fn management(url: &str, given: Option<&str>) -> anyhow::Result<Management> {
    let vhost = mqtransport::BrokerUrl::parse(url).map_or_else(|_| "/".to_owned(), |u| u.vhost().to_owned());
    match given {
        Some(m) => Management::new(m, &vhost),
        None => match topology::management_url(url) {
            Some(m) => Management::new(&m, &vhost),
            None => bail!(
                "{} is not RabbitMQ: only RabbitMQ's management API lists a broker's entities",
                broker::redacted(url)
            ),
        },
    }
}

pub(crate) async fn run_topology(url: &str, command: TopologyCommand, out: Output) -> anyhow::Result<ExitCode> {
    match command {
        TopologyCommand::Lint { file, strict } => {
            let findings = topology::lint(&TopologyFile::read(&file)?.topology()?);
            if out.json {
                println!("{}", serde_json::to_string_pretty(&findings)?);
            } else if findings.is_empty() {
                println!("{}: no pitfalls found", file.display());
            } else {
                for f in &findings {
                    println!("{} {}: {}", out.bad("warning:"), f.entity, f.message);
                }
            }
            Ok(if strict && !findings.is_empty() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        TopologyCommand::Apply { file } => {
            let wanted = TopologyFile::read(&file)?.topology()?;
            for f in topology::lint(&wanted) {
                eprintln!("warning: {}: {}", f.entity, f.message);
            }
            note_embedded(url);
            let transport = broker::connect(url).await?;
            let declared = transport.declare(&wanted).await;
            let _ = transport.close().await;
            declared.with_context(|| format!("cannot apply '{}'", file.display()))?;
            let (x, q, b) = (wanted.exchanges.len(), wanted.queues.len(), wanted.bindings.len());
            if out.json {
                println!("{}", json!({ "exchanges": x, "queues": q, "bindings": b }));
            } else {
                println!(
                    "declared {x} exchange(s), {q} queue(s) and {b} binding(s) on {}",
                    broker::redacted(url)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        TopologyCommand::Diff {
            file,
            management: given,
        } => {
            let wanted = TopologyFile::read(&file)?.topology()?;
            let transport = broker::connect(url).await?;
            // An explicit management API must answer; the default one is used when it does.
            let listing = match (given.as_deref(), topology::management_url(url)) {
                (Some(m), _) => Some(management(url, Some(m))?.definitions(None).await?),
                (None, Some(_)) if !wanted.bindings.is_empty() => {
                    match management(url, None)?.definitions(None).await {
                        Ok(listing) => Some(listing),
                        Err(e) => {
                            eprintln!("note: {e:#}");
                            None
                        }
                    }
                }
                _ => None,
            };
            let result = topology::diff(&transport, &wanted, listing.as_ref()).await;
            let _ = transport.close().await;
            let (differences, note) = result?;
            if out.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(
                        &json!({ "same": differences.is_empty(), "differences": differences, "note": note })
                    )?
                );
            } else {
                for d in &differences {
                    println!("{}", out.bad(&d.to_string()));
                }
                if let Some(note) = &note {
                    eprintln!("note: {note}");
                }
                if differences.is_empty() {
                    println!("{} matches {}", broker::redacted(url), file.display());
                } else {
                    println!("{} difference(s) from {}", differences.len(), file.display());
                }
            }
            Ok(if differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        TopologyCommand::Export {
            management: given,
            prefix,
            format,
            output,
        } => {
            let listing = management(url, given.as_deref())?
                .definitions(prefix.as_deref())
                .await?;
            let format = match (format, &output) {
                (Some(FormatArg::Toml), _) => Format::Toml,
                (Some(FormatArg::Yaml), _) => Format::Yaml,
                (Some(FormatArg::Json), _) => Format::Json,
                (None, Some(path)) => Format::of(path)?,
                (None, None) => Format::Toml,
            };
            let text = TopologyFile::of(&listing).render(format)?;
            match output {
                Some(path) => {
                    std::fs::write(&path, text).with_context(|| format!("cannot write '{}'", path.display()))?;
                    eprintln!(
                        "wrote {} exchange(s), {} queue(s) and {} binding(s) to {}",
                        listing.exchanges.len(),
                        listing.queues.len(),
                        listing.bindings.len(),
                        path.display()
                    );
                }
                None => print!("{text}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
