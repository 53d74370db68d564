//! `mqt bench`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use mqtransport_cli::bench;
use mqtransport_cli::bench::{BenchConfig, QueueKind, StopAfter};
use mqtransport_cli::output::Output;

use super::args::{BenchArgs, QueueTypeArg};

pub(crate) async fn run_bench(url: &str, args: BenchArgs, out: Output) -> anyhow::Result<ExitCode> {
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
    // A bar of the messages consumed (published, without consumers) for a count; a spinner for
    // a duration.
    let bar = (!out.json && std::io::stderr().is_terminal()).then(|| {
        let bar = match config.stop {
            StopAfter::Count(n) => {
                let bar = indicatif::ProgressBar::new(n);
                if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}") {
                    bar.set_style(style);
                }
                bar
            }
            StopAfter::Duration(_) => indicatif::ProgressBar::new_spinner(),
        };
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let consumers = config.consumers;
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
            bar.set_position(if consumers > 0 { p.consumed } else { p.confirmed });
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
