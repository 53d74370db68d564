//! An App on a three-node RabbitMQ cluster with a quorum queue, given every node's address:
//! the node it is connected to is killed mid-stream. Every confirmed message is handled, the
//! consumer resumes on another node, and the test prints lost / duplicated / time to resume.
//!
//! The cluster is private (own node names, ports, data directories and cookie; see
//! `mqtransport_testkit::rabbit_node`), started and killed by the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mqtransport::prelude::*;
use mqtransport::{Confirmation, Transport};
use mqtransport_testkit::rabbit_node::{RabbitCluster, rabbitmq_bin_or_skip};
use serde::{Deserialize, Serialize};

const DEADLINE: Duration = Duration::from_secs(120);

#[derive(Debug, Serialize, Deserialize, Message)]
#[message(name = "cluster.order")]
struct Order {
    n: u32,
}

/// Each order handled, with how often and when last.
#[derive(Clone, Default)]
struct Handled(Arc<Mutex<HashMap<u32, (usize, Instant)>>>);

impl Handled {
    /// When the first order numbered `from` or above was handled.
    fn first_from(&self, from: u32) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _)| **n >= from)
            .map(|(_, (_, at))| *at)
            .min()
    }
}

async fn handle(order: Order, State(handled): State<Handled>) {
    let mut map = handled.0.lock().unwrap();
    let entry = map.entry(order.n).or_insert((0, Instant::now()));
    entry.0 += 1;
    entry.1 = Instant::now();
}

/// The AMQP ports of the nodes holding the app's connections, as the cluster lists them (the
/// cluster is the test's own: every connection is the app's).
async fn nodes_holding(cluster: &RabbitCluster) -> Vec<u16> {
    let out = cluster.nodes[1]
        .ctl(&["list_connections", "port"])
        .await
        .expect("list_connections");
    let mut ports: Vec<u16> = out.lines().filter_map(|l| l.trim().parse().ok()).collect();
    ports.sort_unstable();
    ports
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_node_the_app_is_connected_to_loses_no_confirmed_message() {
    let Some(bin) = rabbitmq_bin_or_skip() else { return };
    let mut cluster = RabbitCluster::start(&bin, 3, "").await.expect("a three-node cluster");
    let url = format!(
        "amqp://guest:guest@{}/%2f?heartbeat=2&connection_timeout=3000",
        cluster.addresses()
    );
    let handled = Handled::default();
    let queue = "mqt-cluster-orders";
    let app = App::with_state(handled.clone())
        .name("mqt-cluster-test")
        .url(url)
        .consumer(
            Consumer::for_queue(Queue::quorum(queue))
                .prefetch(20)
                .concurrency(4)
                .handle(handle),
        )
        .build()
        .await
        .expect("the app starts on the cluster");
    let producer = app.producer::<Order>(Route::queue(queue));
    let running = app.start().await.expect("start");
    let first = cluster.nodes[0].port();
    assert_eq!(
        nodes_holding(&cluster).await,
        [first, first],
        "both connections start on the first address"
    );

    const N: u32 = 3000;
    const WINDOW: usize = 50;
    let mut confirmed = HashSet::new();
    let mut in_flight = FuturesUnordered::new();
    let mut killed_at = None;
    let mut next = 0;
    while next < N || !in_flight.is_empty() {
        while next < N && in_flight.len() < WINDOW {
            let p = producer.clone();
            let n = next;
            in_flight.push(async move { (n, p.publish(&Order { n }).await) });
            next += 1;
        }
        let Some((n, r)) = in_flight.next().await else { break };
        match r {
            Ok(Confirmation::Confirmed) => {
                confirmed.insert(n);
            }
            Err(e) if e.is_outcome_unknown() => {}
            other => panic!("publish of order {n}: {other:?}"),
        }
        if killed_at.is_none() && confirmed.len() >= N as usize / 3 {
            // Orders from `next` on are published after the kill: the first of them handled
            // went through both connections' failover.
            killed_at = Some((Instant::now(), next));
            cluster.nodes[0].kill().await.expect("the first node dies");
        }
    }
    let (killed_at, published_after) = killed_at.expect("the node was killed");

    let deadline = Instant::now() + DEADLINE;
    let missing = loop {
        let missing: Vec<u32> = {
            let map = handled.0.lock().unwrap();
            confirmed.iter().filter(|n| !map.contains_key(n)).copied().collect()
        };
        if missing.is_empty() || Instant::now() > deadline {
            break missing;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let duplicates: usize = handled.0.lock().unwrap().values().map(|(n, _)| n - 1).sum();
    let resumed = handled
        .first_from(published_after)
        .map(|at| at.duration_since(killed_at));
    println!(
        "cluster failover: {} of {N} confirmed; lost {}; duplicated {duplicates}; consumer resumed {resumed:?} after the kill",
        confirmed.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "confirmed orders never handled: {missing:?}");
    assert!(
        duplicates <= WINDOW + 20,
        "{duplicates} duplicates: more than in flight"
    );
    let resumed = resumed.expect("the consumer handled orders published after the kill");
    assert!(resumed < Duration::from_secs(30), "resumed only after {resumed:?}");
    let now_on = nodes_holding(&cluster).await;
    assert!(
        now_on.len() == 2 && !now_on.contains(&first),
        "both connections moved to the surviving nodes: {now_on:?}"
    );

    running.shutdown().await.expect("shutdown");
    let conn = mqtransport::connect(&format!("amqp://guest:guest@{}/%2f", cluster.nodes[1].address()))
        .await
        .expect("connect");
    assert_eq!(conn.queue_info(queue).await.expect("info").message_count, 0);
    conn.close().await.expect("close");
}
