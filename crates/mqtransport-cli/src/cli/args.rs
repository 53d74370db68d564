//! The command line's arguments (clap).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mqtransport::DeadLetterFilter;
use mqtransport_cli::dlq;

#[derive(Parser)]
#[command(
    name = "mqt",
    version,
    about = "The mqtransport command line: load tests, messages in and out, dead letters",
    after_help = "Exit codes: 0 done; 1 done, and something is wrong (a diff differs, messages were lost or refused); 2 could not run (bad input, broker unreachable).\n\nExamples:\n  mqt bench --count 100000\n  MQT_URL=amqp://guest:guest@localhost:5672/%2f mqt publish --queue orders '{\"id\": 1}'\n  mqt --url amqp://guest:guest@localhost:5672/%2f consume orders --count 1"
)]
pub(crate) struct Cli {
    /// The broker: memory:// (the embedded broker, inside this process), amqp://, amqps://,
    /// sqs://.
    #[arg(
        long,
        global = true,
        env = "MQT_URL",
        default_value = "memory://",
        hide_env_values = true
    )]
    pub(crate) url: String,
    /// Print JSON for scripts instead of text for people.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    #[command(
        subcommand,
        after_help = "Examples:\n  mqt dlq summary orders.dlq\n  mqt dlq replay orders.dlq --dry-run"
    )]
    Dlq(DlqCommand),
    /// Topology files (TOML, YAML, JSON): apply, diff, lint, export.
    #[command(
        subcommand,
        after_help = "Examples:\n  mqt topology lint topology.toml\n  mqt --url amqp://guest:guest@localhost:5672/%2f topology diff topology.toml"
    )]
    Topology(TopologyCommand),
    /// An app's AsyncAPI document as a page. The app writes the document when it starts with
    /// MQT_ASYNCAPI set (see `App::asyncapi`).
    #[command(
        subcommand,
        after_help = "Example:\n  MQT_ASYNCAPI=asyncapi.json cargo run && mqt docs serve asyncapi.json"
    )]
    Docs(DocsCommand),
}

#[derive(Subcommand)]
pub(crate) enum DocsCommand {
    /// Serve the document as an HTML page (re-read on every request).
    #[command(
        after_help = "Example:\n  MQT_ASYNCAPI=asyncapi.json cargo run   # the app writes its document as it starts\n  mqt docs serve asyncapi.json          # then open http://127.0.0.1:8080/"
    )]
    Serve {
        /// The AsyncAPI 3 document (JSON).
        file: PathBuf,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
    },
    /// Write the document as one self-contained HTML page.
    #[command(after_help = "Example:\n  mqt docs html asyncapi.json --output docs/messaging.html")]
    Html {
        /// The AsyncAPI 3 document (JSON).
        file: PathBuf,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub(crate) enum TopologyCommand {
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
pub(crate) enum FormatArg {
    Toml,
    Yaml,
    Json,
}

#[derive(Args)]
pub(crate) struct BenchArgs {
    /// Publishing tasks.
    #[arg(long, default_value_t = 1)]
    pub(crate) producers: usize,
    /// Consumers, spread round robin over the queues.
    #[arg(long, default_value_t = 1)]
    pub(crate) consumers: usize,
    /// Queues (made for the run, deleted after it).
    #[arg(long, default_value_t = 1)]
    pub(crate) queues: usize,
    /// Body size in bytes (at least 8).
    #[arg(long, default_value_t = 64)]
    pub(crate) size: usize,
    /// Messages per second per producer (default: as fast as confirms allow).
    #[arg(long)]
    pub(crate) rate: Option<f64>,
    /// Unconfirmed publishes each producer keeps in flight.
    #[arg(long, default_value_t = 1000)]
    pub(crate) confirm_window: usize,
    /// Each consumer's prefetch.
    #[arg(long, default_value_t = 500)]
    pub(crate) prefetch: u16,
    /// The queues' type.
    #[arg(long, value_enum, default_value_t = QueueTypeArg::Classic)]
    pub(crate) queue_type: QueueTypeArg,
    /// Messages to publish in all.
    #[arg(long, conflicts_with = "duration")]
    pub(crate) count: Option<u64>,
    /// Publish for this many seconds instead of a count.
    #[arg(long)]
    pub(crate) duration: Option<f64>,
    /// The broker's no-ack mode instead of an ack per message.
    #[arg(long)]
    pub(crate) auto_ack: bool,
    /// Seconds the consumers may go without a message, once publishing ended, before the run
    /// ends with what it has.
    #[arg(long, default_value_t = 10.0)]
    pub(crate) drain_timeout: f64,
    /// Serve the run's metrics for Prometheus at http://ADDR/metrics (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub(crate) prometheus: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum QueueTypeArg {
    Classic,
    Quorum,
}

#[derive(Args)]
pub(crate) struct PublishArgs {
    /// The body (default: read from --file, or standard input).
    pub(crate) body: Option<String>,
    /// To this queue, through the default exchange.
    #[arg(long, conflicts_with = "exchange", required_unless_present = "exchange")]
    pub(crate) queue: Option<String>,
    /// To this exchange.
    #[arg(long)]
    pub(crate) exchange: Option<String>,
    /// The routing key (with --exchange).
    #[arg(long, default_value = "", requires = "exchange")]
    pub(crate) routing_key: String,
    /// Read the body from this file (`-`: standard input).
    #[arg(long, conflicts_with = "body")]
    pub(crate) file: Option<String>,
    /// One message per line of the input.
    #[arg(long)]
    pub(crate) lines: bool,
    /// Send each message this many times.
    #[arg(long, default_value_t = 1)]
    pub(crate) count: usize,
    /// A header, KEY=VALUE (true/false and integers are typed); repeat for more.
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    pub(crate) headers: Vec<String>,
    /// The `type` property: the message name mqtransport consumers dispatch by.
    #[arg(long = "type", value_name = "NAME")]
    pub(crate) kind: Option<String>,
    /// `content_type` (default: application/json for a JSON body).
    #[arg(long)]
    pub(crate) content_type: Option<String>,
    /// A fixed message id (default: a new UUIDv7 per message).
    #[arg(long)]
    pub(crate) message_id: Option<String>,
    /// `correlation_id`.
    #[arg(long)]
    pub(crate) correlation_id: Option<String>,
    /// `reply_to`.
    #[arg(long)]
    pub(crate) reply_to: Option<String>,
    /// `expiration`, in milliseconds.
    #[arg(long, value_name = "MS")]
    pub(crate) expiration: Option<u64>,
    /// `priority`.
    #[arg(long)]
    pub(crate) priority: Option<u8>,
    /// Transient (delivery mode 1) instead of persistent.
    #[arg(long)]
    pub(crate) transient: bool,
}

#[derive(Args)]
pub(crate) struct ConsumeArgs {
    /// The queue.
    pub(crate) queue: String,
    /// Stop after this many messages (default: until interrupted, or --idle).
    #[arg(long)]
    pub(crate) count: Option<usize>,
    /// Put each message back when done (look without taking; at most the prefetch is seen).
    #[arg(long, conflicts_with = "no_ack")]
    pub(crate) requeue: bool,
    /// The broker's no-ack mode: messages leave the queue as they are sent.
    #[arg(long)]
    pub(crate) no_ack: bool,
    /// The prefetch.
    #[arg(long, default_value_t = 100)]
    pub(crate) prefetch: u16,
    /// Stop when no message came for this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub(crate) idle: Option<f64>,
}

#[derive(Subcommand)]
pub(crate) enum DlqCommand {
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
pub(crate) struct FilterArgs {
    /// Only messages of this name (`type`).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// Only those whose reason contains this text.
    #[arg(long)]
    pub(crate) reason: Option<String>,
    /// Only those that failed after this time (2026-12-05T10:00:00Z, epoch seconds, or an age: 15m, 2h, 3d).
    #[arg(long)]
    pub(crate) after: Option<String>,
    /// Only those that failed before this time (same forms as --after).
    #[arg(long)]
    pub(crate) before: Option<String>,
    /// Only these message ids; repeat for more.
    #[arg(long = "id", value_name = "MESSAGE_ID")]
    pub(crate) ids: Vec<String>,
}

impl FilterArgs {
    pub(crate) fn filter(&self) -> anyhow::Result<DeadLetterFilter> {
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
