//! `mqt publish` and `mqt consume`.

use std::io::{IsTerminal as _, Read as _};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use mqtransport::transport::Transport as _;
use mqtransport_cli::consume::{ConsumeRequest, Settle};
use mqtransport_cli::output::Output;
use mqtransport_cli::publish::{MessageOptions, Target};
use mqtransport_cli::{broker, consume, publish, render};
use serde_json::json;

use super::args::{ConsumeArgs, PublishArgs};
use super::note_embedded;

pub(crate) async fn run_publish(url: &str, args: PublishArgs, out: Output) -> anyhow::Result<ExitCode> {
    let input: Vec<u8> = match (&args.body, args.file.as_deref()) {
        (Some(body), _) => body.clone().into_bytes(),
        (None, Some(path)) if path != "-" => std::fs::read(path).with_context(|| format!("cannot read '{path}'"))?,
        (None, _) => {
            if std::io::stdin().is_terminal() {
                eprintln!("reading the message from standard input (end with ctrl-d)");
            }
            let mut buf = Vec::new();
            std::io::stdin()
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            buf
        }
    };
    let bodies = publish::bodies(&input, args.lines);
    let headers = args
        .headers
        .iter()
        .map(|h| publish::parse_header(h))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let options = MessageOptions {
        headers,
        kind: args.kind,
        content_type: args.content_type,
        message_id: args.message_id,
        correlation_id: args.correlation_id,
        reply_to: args.reply_to,
        expiration: args.expiration.map(Duration::from_millis),
        priority: args.priority,
        transient: args.transient,
    };
    let to = match (args.queue, args.exchange) {
        (Some(q), _) => Target::Queue(q),
        (None, Some(name)) => Target::Exchange {
            name,
            routing_key: args.routing_key,
        },
        (None, None) => bail!("say where to publish: --queue QUEUE or --exchange EXCHANGE"),
    };
    note_embedded(url);
    let transport = broker::connect(url).await?;
    let published = publish::publish(&transport, &to, &bodies, args.count.max(1), &options).await;
    let _ = transport.close().await;
    let published = published?;
    let failed: Vec<_> = published.iter().filter(|p| p.outcome != "confirmed").collect();
    let target = match &to {
        Target::Queue(q) => format!("queue '{q}'"),
        Target::Exchange { name, routing_key } => format!("exchange '{name}' with routing key '{routing_key}'"),
    };
    if out.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "to": target, "messages": published }))?
        );
    } else {
        for p in &published {
            let outcome = match (&p.reason, p.outcome.as_str()) {
                (Some(r), o) => out.bad(&format!("{o} ({r})")),
                (None, "confirmed") => out.good("confirmed"),
                (None, o) => out.bad(o),
            };
            println!("message {} {}: {outcome}", p.index, out.dim(&p.message_id));
        }
        println!(
            "{} of {} message(s) to {target} confirmed",
            published.len() - failed.len(),
            published.len()
        );
    }
    if let Some(first) = failed.first() {
        bail!(
            "{} message(s) to {target} were not confirmed; the first, message {}, was {}{}",
            failed.len(),
            first.index,
            first.outcome,
            first.reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(crate) async fn run_consume(url: &str, args: ConsumeArgs, out: Output) -> anyhow::Result<ExitCode> {
    let settle = match (args.requeue, args.no_ack) {
        (true, _) => Settle::Requeue,
        (_, true) => Settle::NoAck,
        _ => Settle::Ack,
    };
    let idle = args
        .idle
        .map(Duration::try_from_secs_f64)
        .transpose()
        .context("--idle must be a number of seconds")?;
    note_embedded(url);
    let transport = broker::connect(url).await?;
    let request = ConsumeRequest {
        queue: args.queue,
        count: args.count,
        settle,
        prefetch: args.prefetch,
        idle,
    };
    let mut n = 0;
    let taken = consume::consume(
        &transport,
        &request,
        |d| {
            n += 1;
            if out.json {
                let mut v = render::envelope_json(&d.envelope);
                v["exchange"] = json!(d.exchange.as_str());
                v["routing_key"] = json!(d.routing_key.as_str());
                v["redelivered"] = json!(d.redelivered);
                println!("{v}");
            } else {
                let route = if d.exchange.is_empty() {
                    format!("routing key '{}'", d.routing_key)
                } else {
                    format!("exchange '{}', routing key '{}'", d.exchange, d.routing_key)
                };
                let redelivered = if d.redelivered { ", redelivered" } else { "" };
                println!(
                    "{} {}",
                    out.bold(&format!("message {n}")),
                    out.dim(&format!("({route}{redelivered})"))
                );
                print!("{}", render::envelope_text(&d.envelope));
            }
        },
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
    )
    .await;
    let _ = transport.close().await;
    let taken = taken?;
    if !out.json {
        let done = match settle {
            Settle::Ack => "acknowledged",
            Settle::Requeue => "requeued",
            Settle::NoAck => "taken without acknowledgement",
        };
        eprintln!("{taken} message(s) {done}");
    }
    Ok(ExitCode::SUCCESS)
}
