//! `mqt`: the mqtransport command line. Each command parses its arguments, calls the library
//! ([`mqtransport_cli`]) and prints, for people or as JSON (`--json`).

use std::io::{IsTerminal as _, Read as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use mqtransport::transport::Transport as _;
use mqtransport::{DeadLetterFilter, DeadLetters, Replay, ReplayTarget, Route};
use mqtransport_cli::bench::{BenchConfig, QueueKind, StopAfter};
use mqtransport_cli::consume::{ConsumeRequest, Settle};
use mqtransport_cli::output::{Output, table};
use mqtransport_cli::publish::{MessageOptions, Target};
use mqtransport_cli::topology::{Format, Management, TopologyFile};
use mqtransport_cli::{bench, broker, consume, dlq, publish, render, topology};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "mqt",
    version,
    about = "The mqtransport command line: load tests, messages in and out, dead letters",
    after_help = "Exit codes: 0 done; 1 done, and something is wrong (a diff differs, messages were lost or refused); 2 could not run (bad input, broker unreachable).\n\nExamples:\n  mqt bench --count 100000\n  MQT_URL=amqp://guest:guest@localhost:5672/%2f mqt publish --queue orders '{\"id\": 1}'\n  mqt --url amqp://guest:guest@localhost:5672/%2f consume orders --count 1"
)]
struct Cli {
    /// The broker: memory:// (the embedded broker, inside this process), amqp://, amqps://,
    /// sqs://.
    #[arg(
        long,
        global = true,
        env = "MQT_URL",
        default_value = "memory://",
        hide_env_values = true
    )]
    url: String,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load-test a broker: producers, consumers, rates and latency percentiles.
    #[command(
        after_help = "Examples:\n  mqt bench --count 200000 --producers 2 --consumers 2\n  mqt --url amqp://guest:guest@localhost:5672/%2f bench --duration 30 --rate 5000 --queue-type quorum\n  mqt bench --count 10000 --json"
    )]
    Bench(BenchArgs),
    /// Publish messages to a queue or an exchange and print each confirmation.
    #[command(
        after_help = "Examples:\n  mqt publish --queue orders '{\"id\": 1}'\n  mqt publish --exchange shop --routing-key order.created --type shop.order --file order.json\n  cat orders.jsonl | mqt publish --queue orders --lines --header tenant=acme"
    )]
    Publish(PublishArgs),
    /// Take messages from a queue and print them.
    #[command(
        after_help = "Examples:\n  mqt consume orders --count 10\n  mqt consume orders --requeue --count 5    # look without taking\n  mqt consume orders --idle 2 --json"
    )]
    Consume(ConsumeArgs),
    /// Dead-letter queues: list, summarise, show, replay, purge.
    #[command(subcommand)]
    Dlq(DlqCommand),
    /// Topology files (TOML, YAML, JSON): apply, diff, lint, export.
    #[command(subcommand)]
    Topology(TopologyCommand),
}

#[derive(Subcommand)]
enum TopologyCommand {
    /// Declare a file's exchanges, queues and bindings on the broker (idempotent).
    #[command(after_help = "Example:\n  mqt --url amqp://guest:guest@localhost:5672/%2f topology apply topology.toml")]
    Apply {
        /// The topology file (.toml, .yaml, .yml, .json).
        file: PathBuf,
    },
    /// List what on the broker differs from the file, changing nothing; exit code 1 when
    /// something differs.
    #[command(
        after_help = "Example (in CI):\n  mqt --url \"$AMQP_URL\" topology diff topology.yaml || echo \"the broker drifted\""
    )]
    Diff {
        /// The topology file.
        file: PathBuf,
        /// RabbitMQ's management API, to check bindings (default: the AMQP host on port 15672,
        /// when it answers).
        #[arg(long, value_name = "URL")]
        management: Option<String>,
    },
    /// Look for RabbitMQ pitfalls in a file (mirroring arguments, a TTL or length limit
    /// without a dead-letter route, a queue nobody binds, ...).
    #[command(after_help = "Example:\n  mqt topology lint topology.toml --strict")]
    Lint {
        /// The topology file.
        file: PathBuf,
        /// Exit code 1 when anything is found.
        #[arg(long)]
        strict: bool,
    },
    /// Write a RabbitMQ virtual host's exchanges, queues and bindings as a topology file, read
    /// through its management API.
    #[command(
        after_help = "Example:\n  mqt --url amqp://guest:guest@localhost:5672/%2f topology export --prefix shop. --output topology.toml"
    )]
    Export {
        /// RabbitMQ's management API (default: the AMQP host on port 15672).
        #[arg(long, value_name = "URL")]
        management: Option<String>,
        /// Only entities whose names start with this (a binding when its source or
        /// destination does).
        #[arg(long)]
        prefix: Option<String>,
        /// The file's format (default: from --output's extension, else TOML).
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// Write to this file instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Toml,
    Yaml,
    Json,
}

#[derive(Args)]
struct BenchArgs {
    /// Publishing tasks.
    #[arg(long, default_value_t = 1)]
    producers: usize,
    /// Consumers, spread round robin over the queues.
    #[arg(long, default_value_t = 1)]
    consumers: usize,
    /// Queues (made for the run, deleted after it).
    #[arg(long, default_value_t = 1)]
    queues: usize,
    /// Body size in bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Messages per second per producer (default: as fast as confirms allow).
    #[arg(long)]
    rate: Option<f64>,
    /// Unconfirmed publishes each producer keeps in flight.
    #[arg(long, default_value_t = 1000)]
    confirm_window: usize,
    /// Each consumer's prefetch.
    #[arg(long, default_value_t = 500)]
    prefetch: u16,
    /// The queues' type.
    #[arg(long, value_enum, default_value_t = QueueTypeArg::Classic)]
    queue_type: QueueTypeArg,
    /// Messages to publish in all.
    #[arg(long, conflicts_with = "duration")]
    count: Option<u64>,
    /// Publish for this many seconds instead of a count.
    #[arg(long)]
    duration: Option<f64>,
    /// The broker's no-ack mode instead of an ack per message.
    #[arg(long)]
    auto_ack: bool,
    /// Seconds the consumers may go without a message, once publishing ended, before the run
    /// ends with what it has.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Serve the run's metrics for Prometheus at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    prometheus: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum QueueTypeArg {
    Classic,
    Quorum,
}

#[derive(Args)]
struct PublishArgs {
    /// The body (default: read from --file, or standard input).
    body: Option<String>,
    /// To this queue, through the default exchange.
    #[arg(long, conflicts_with = "exchange", required_unless_present = "exchange")]
    queue: Option<String>,
    /// To this exchange.
    #[arg(long)]
    exchange: Option<String>,
    /// The routing key (with --exchange).
    #[arg(long, default_value = "", requires = "exchange")]
    routing_key: String,
    /// Read the body from this file (`-`: standard input).
    #[arg(long, conflicts_with = "body")]
    file: Option<String>,
    /// One message per line of the input.
    #[arg(long)]
    lines: bool,
    /// Send each message this many times.
    #[arg(long, default_value_t = 1)]
    count: usize,
    /// A header, KEY=VALUE (true/false and integers are typed); repeat for more.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// The `type` property: the message name mqtransport consumers dispatch by.
    #[arg(long = "type", value_name = "NAME")]
    kind: Option<String>,
    /// `content_type` (default: application/json for a JSON body).
    #[arg(long)]
    content_type: Option<String>,
    /// A fixed message id (default: a new UUIDv7 per message).
    #[arg(long)]
    message_id: Option<String>,
    /// `correlation_id`.
    #[arg(long)]
    correlation_id: Option<String>,
    /// `reply_to`.
    #[arg(long)]
    reply_to: Option<String>,
    /// `expiration`, in milliseconds.
    #[arg(long, value_name = "MS")]
    expiration: Option<u64>,
    /// `priority`.
    #[arg(long)]
    priority: Option<u8>,
    /// Transient (delivery mode 1) instead of persistent.
    #[arg(long)]
    transient: bool,
}

#[derive(Args)]
struct ConsumeArgs {
    /// The queue.
    queue: String,
    /// Stop after this many messages (default: until interrupted, or --idle).
    #[arg(long)]
    count: Option<usize>,
    /// Put each message back when done (look without taking; at most the prefetch is seen).
    #[arg(long, conflicts_with = "no_ack")]
    requeue: bool,
    /// The broker's no-ack mode: messages leave the queue as they are sent.
    #[arg(long)]
    no_ack: bool,
    /// The prefetch.
    #[arg(long, default_value_t = 100)]
    prefetch: u16,
    /// Stop when no message came for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    idle: Option<f64>,
}

#[derive(Subcommand)]
enum DlqCommand {
    /// List the dead letters (they stay in the queue).
    #[command(after_help = "Example:\n  mqt dlq list orders.dlq --reason timeout --after 2h")]
    List {
        /// The dead-letter queue.
        queue: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// List at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Count the dead letters by reason.
    #[command(after_help = "Example:\n  mqt dlq summary orders.dlq")]
    Summary {
        /// The dead-letter queue.
        queue: String,
    },
    /// Show one dead letter whole: why it failed, its properties, headers and body.
    #[command(after_help = "Example:\n  mqt dlq show orders.dlq 01938f2e-6a4b-7c3d-9e8f-0a1b2c3d4e5f")]
    Show {
        /// The dead-letter queue.
        queue: String,
        /// Its message id.
        message_id: String,
    },
    /// Publish dead letters again (attempts reset), each removed once its copy is confirmed.
    #[command(
        after_help = "Examples:\n  mqt dlq replay orders.dlq --dry-run\n  mqt dlq replay orders.dlq --name shop.order --rate 50\n  mqt dlq replay orders.dlq --to-route shop:order.created --id 01938f2e-6a4b-7c3d-9e8f-0a1b2c3d4e5f"
    )]
    Replay {
        /// The dead-letter queue.
        queue: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// To this queue instead of the one whose consumer gave up.
        #[arg(long, conflicts_with_all = ["to_route", "original_route"])]
        to_queue: Option<String>,
        /// To this route, EXCHANGE:ROUTING_KEY.
        #[arg(long, conflicts_with = "original_route")]
        to_route: Option<String>,
        /// To the exchange and routing key each was first published with.
        #[arg(long)]
        original_route: bool,
        /// At most this many per second.
        #[arg(long)]
        rate: Option<u32>,
        /// Say what would be done, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay even those replayed 3 times already (the loop guard).
        #[arg(long)]
        force: bool,
    },
    /// Delete the dead letters the filter matches (all, without one) and print how many.
    #[command(after_help = "Example:\n  mqt dlq purge orders.dlq --before 7d")]
    Purge {
        /// The dead-letter queue.
        queue: String,
        #[command(flatten)]
        filter: FilterArgs,
    },
}

#[derive(Args)]
struct FilterArgs {
    /// Only messages of this name (`type`).
    #[arg(long)]
    name: Option<String>,
    /// Only those whose reason contains this text.
    #[arg(long)]
    reason: Option<String>,
    /// Only those that failed after this time (2026-12-05T10:00:00Z, epoch seconds, or an age: 15m, 2h, 3d).
    #[arg(long)]
    after: Option<String>,
    /// Only those that failed before this time (same forms as --after).
    #[arg(long)]
    before: Option<String>,
    /// Only these message ids; repeat for more.
    #[arg(long = "id", value_name = "MESSAGE_ID")]
    ids: Vec<String>,
}

impl FilterArgs {
    fn filter(&self) -> anyhow::Result<DeadLetterFilter> {
        let now = std::time::SystemTime::now();
        let mut f = DeadLetterFilter::new();
        if let Some(n) = &self.name {
            f = f.name(n.clone());
        }
        if let Some(r) = &self.reason {
            f = f.reason_contains(r.clone());
        }
        if let Some(t) = &self.after {
            f = f.failed_after(dlq::parse_time(t, now).context("--after")?);
        }
        if let Some(t) = &self.before {
            f = f.failed_before(dlq::parse_time(t, now).context("--before")?);
        }
        if !self.ids.is_empty() {
            f = f.message_ids(self.ids.clone());
        }
        Ok(f)
    }
}

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

/// Says on standard error that `memory://` lives only in this process.
fn note_embedded(url: &str) {
    if broker::is_embedded(url) {
        eprintln!(
            "note: memory:// is an embedded broker inside this mqt process: its messages are gone when mqt exits"
        );
    }
}

async fn run(cli: Cli, out: Output) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Bench(args) => run_bench(&cli.url, args, out).await,
        Command::Publish(args) => run_publish(&cli.url, args, out).await,
        Command::Consume(args) => run_consume(&cli.url, args, out).await,
        Command::Dlq(command) => run_dlq(&cli.url, command, out).await,
        Command::Topology(command) => run_topology(&cli.url, command, out).await,
    }
}

async fn run_bench(url: &str, args: BenchArgs, out: Output) -> anyhow::Result<ExitCode> {
    let stop = match (args.count, args.duration) {
        (_, Some(secs)) => {
            let d = Duration::try_from_secs_f64(secs).context("--duration must be a number of seconds")?;
            StopAfter::Duration(d)
        }
        (Some(n), None) => StopAfter::Count(n),
        (None, None) => StopAfter::Count(100_000),
    };
    let config = BenchConfig {
        producers: args.producers,
        consumers: args.consumers,
        queues: args.queues,
        size: args.size,
        rate: args.rate,
        confirm_window: args.confirm_window,
        prefetch: args.prefetch,
        queue_kind: match args.queue_type {
            QueueTypeArg::Classic => QueueKind::Classic,
            QueueTypeArg::Quorum => QueueKind::Quorum,
        },
        stop,
        auto_ack: args.auto_ack,
        drain_timeout: Duration::try_from_secs_f64(args.drain_timeout)
            .context("--drain-timeout must be a number of seconds")?,
    };
    config.check()?;
    if let Some(addr) = &args.prometheus {
        let bound = bench::serve_prometheus(addr).await?;
        eprintln!("serving Prometheus metrics at http://{bound}/metrics");
    }
    let bar = (!out.json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let mut last = (0u64, 0u64, Duration::ZERO);
    let report = bench::run(url, &config, |p| {
        if let Some(bar) = &bar {
            let dt = p.elapsed.saturating_sub(last.2).as_secs_f64().max(1e-3);
            let publish_rate = (p.confirmed - last.0.min(p.confirmed)) as f64 / dt;
            let consume_rate = (p.consumed - last.1.min(p.consumed)) as f64 / dt;
            bar.set_message(format!(
                "{:>6.1} s  published {} ({:.0}/s)  consumed {} ({:.0}/s)",
                p.elapsed.as_secs_f64(),
                p.confirmed,
                publish_rate,
                p.consumed,
                consume_rate
            ));
            last = (p.confirmed, p.consumed, p.elapsed);
        }
    })
    .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let report = report?;
    if out.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table(&out));
    }
    let clean = report.returned + report.nacked + report.failed == 0
        && (report.consumers == 0 || report.consumed >= report.confirmed);
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

async fn run_publish(url: &str, args: PublishArgs, out: Output) -> anyhow::Result<ExitCode> {
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

async fn run_consume(url: &str, args: ConsumeArgs, out: Output) -> anyhow::Result<ExitCode> {
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

async fn run_dlq(url: &str, command: DlqCommand, out: Output) -> anyhow::Result<ExitCode> {
    let transport = broker::connect(url).await?;
    let result = dlq_command(&transport, command, out).await;
    let _ = transport.close().await;
    result
}

async fn dlq_command(
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

/// The management API a topology command reads: the one given, else the default next to the
/// AMQP listener; and the virtual host of the broker URL.
fn management(url: &str, given: Option<&str>) -> anyhow::Result<Management> {
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

async fn run_topology(url: &str, command: TopologyCommand, out: Output) -> anyhow::Result<ExitCode> {
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
