//! `mqt dlq`.

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use mqtransport::transport::Transport as _;
use mqtransport::{DeadLetterFilter, DeadLetters, Replay, ReplayTarget, Route};
use mqtransport_cli::output::{Output, table};
use mqtransport_cli::{broker, dlq, render};
use serde_json::json;

use super::args::DlqCommand;

pub(crate) async fn run_dlq(url: &str, command: DlqCommand, out: Output) -> anyhow::Result<ExitCode> {
    let transport = broker::connect(url).await?;
    let result = dlq_command(&transport, command, out).await;
    let _ = transport.close().await;
    result
}

pub(crate) async fn dlq_command(
    transport: &mqtransport::DynTransport,
    command: DlqCommand,
    out: Output,
) -> anyhow::Result<ExitCode> {
    match command {
        DlqCommand::List { queue, filter, limit } => {
            let letters = DeadLetters::new(transport.clone(), &queue)
                .list(&filter.filter()?, limit)
                .await
                .with_context(|| format!("cannot list dead-letter queue '{queue}'"))?;
            if out.json {
                let list: Vec<_> = letters.iter().map(dlq::letter_json).collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if letters.is_empty() {
                println!("no dead letters in '{queue}' match");
            } else {
                let mut rows = vec![
                    ["message id", "name", "attempts", "failed at", "reason"]
                        .map(str::to_owned)
                        .to_vec(),
                ];
                rows.extend(letters.iter().map(dlq::letter_row));
                print!("{}", table(&out, &rows));
            }
        }
        DlqCommand::Summary { queue } => {
            let summary = DeadLetters::new(transport.clone(), &queue)
                .summary()
                .await
                .with_context(|| format!("cannot read dead-letter queue '{queue}'"))?;
            if out.json {
                let list: Vec<_> = summary
                    .iter()
                    .map(|s| {
                        json!({
                            "reason": s.reason, "count": s.count, "names": s.names,
                            "first_failed": s.first_failed.map(dlq::utc), "last_failed": s.last_failed.map(dlq::utc),
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if summary.is_empty() {
                println!("'{queue}' holds no dead letters");
            } else {
                let mut rows = vec![["count", "names", "last failed", "reason"].map(str::to_owned).to_vec()];
                rows.extend(summary.iter().map(|s| {
                    vec![
                        s.count.to_string(),
                        s.names.join(","),
                        s.last_failed.map(dlq::utc).unwrap_or_default(),
                        s.reason.clone(),
                    ]
                }));
                print!("{}", table(&out, &rows));
            }
        }
        DlqCommand::Show { queue, message_id } => {
            let letters = DeadLetters::new(transport.clone(), &queue)
                .list(&DeadLetterFilter::new().message_id(message_id.clone()), 1)
                .await
                .with_context(|| format!("cannot read dead-letter queue '{queue}'"))?;
            let Some(letter) = letters.first() else {
                bail!("no dead letter with message id '{message_id}' in '{queue}'");
            };
            if out.json {
                println!("{}", serde_json::to_string_pretty(&dlq::letter_json(letter))?);
            } else {
                let row = dlq::letter_row(letter);
                println!("{} {}", out.bold("dead letter"), row[0]);
                println!("  reason: {}", letter.reason);
                for (label, value) in [
                    ("name", letter.name.clone()),
                    ("attempts", letter.attempts.map(|n| n.to_string())),
                    ("failed at", letter.failed_at.map(dlq::utc)),
                    ("queue", letter.queue.clone()),
                    ("original exchange", letter.original_exchange.clone()),
                    ("original routing key", letter.original_routing_key.clone()),
                    ("replays", Some(letter.replays.to_string())),
                ] {
                    if let Some(v) = value {
                        println!("  {label}: {v}");
                    }
                }
                println!("{}", out.bold("message"));
                print!("{}", render::envelope_text(&letter.envelope));
            }
        }
        DlqCommand::Replay {
            queue,
            filter,
            to_queue,
            to_route,
            original_route,
            rate,
            dry_run,
            force,
        } => {
            let target = match (to_queue, to_route, original_route) {
                (Some(q), _, _) => ReplayTarget::Route(Route::queue(q)),
                (None, Some(r), _) => {
                    let (exchange, key) = dlq::parse_route(&r)?;
                    ReplayTarget::Route(Route::new(exchange, key))
                }
                (None, None, true) => ReplayTarget::OriginalRoute,
                (None, None, false) => ReplayTarget::OriginalQueue,
            };
            let mut replay = Replay::new()
                .filter(filter.filter()?)
                .to(target)
                .dry_run(dry_run)
                .force(force);
            if let Some(r) = rate {
                replay = replay.rate_limit(r);
            }
            let report = DeadLetters::new(transport.clone(), &queue)
                .replay(&replay)
                .await
                .with_context(|| format!("cannot replay from dead-letter queue '{queue}'"))?;
            if out.json {
                let entries: Vec<_> = report.entries.iter().map(dlq::entry_json).collect();
                println!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "dry_run": dry_run, "examined": report.examined, "replayed": report.replayed(),
                        "loop_guarded": report.loop_guarded(), "failed": report.failed(), "entries": entries,
                    }))?
                );
            } else {
                for e in &report.entries {
                    println!("{e}");
                }
                let verb = if dry_run { "would replay" } else { "replayed" };
                println!(
                    "{verb} {} of {} examined; {} kept by the loop guard; {} failed",
                    report.replayed(),
                    report.examined,
                    report.loop_guarded(),
                    report.failed()
                );
            }
            if report.failed() > 0 {
                return Ok(ExitCode::FAILURE);
            }
        }
        DlqCommand::Purge { queue, filter } => {
            let purged = DeadLetters::new(transport.clone(), &queue)
                .purge(&filter.filter()?)
                .await
                .with_context(|| format!("cannot purge dead-letter queue '{queue}'"))?;
            if out.json {
                println!("{}", json!({ "queue": queue, "purged": purged }));
            } else {
                println!("purged {purged} dead letter(s) from '{queue}'");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
