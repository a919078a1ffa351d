//! The ring simulator: how evenly golang's ring and the balanced ring spread keys, how many
//! keys move when a node joins or leaves, and how long a lookup and a build take, at 3 to
//! 1,000 nodes with realistic peer URLs. The table is in docs/scaling.md.
//!
//! ```text
//! cargo run --release --example ringsim
//! ```
//!
//! Shares and moved keys are computed exactly from the rings' arc lengths
//! (`Ring::ownership`), not from sampled keys; a sample of 20,000 keys only checks that keys
//! move to or from the node that joins or leaves and no other.

#![allow(missing_docs, unreachable_pub, dead_code)]

mod sim;

use sim::Urls;
use tower_groupcache::RingKind;

fn main() {
    println!(
        "busiest: the busiest node's share of the hash space over its fair share 1/N, from arc \
         lengths"
    );
    println!(
        "join: keys moved when node N+1 joins, over the ideal 1/(N+1); leave: keys moved when \
         the last of N nodes leaves, over the ideal 1/N (both from arc lengths)"
    );
    println!(
        "lookup: ns per owner lookup, median (best) of 31 batches of 16,384 keys; build: ms to \
         build the ring, median (best) of 31; memory: the ring's points and index"
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "load average at the start (1, 5, 15 min): {}\n",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let started = std::time::Instant::now();
    println!(
        "| ring | URLs | nodes | busiest | join | leave | lookup (ns) | build (ms) | memory |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for kind in [RingKind::Golang, RingKind::Balanced] {
        for urls in [Urls::StatefulSet, Urls::Ip] {
            for nodes in [3, 10, 50, 200, 1_000] {
                let row = sim::row(kind, urls, nodes, 31);
                if nodes <= 200 {
                    sim::check_moves(kind, urls, nodes, 20_000);
                }
                println!(
                    "| {} | {} | {} | {:.3} | {:.3} | {:.3} | {:.1} ({:.1}) | {:.2} ({:.2}) | {} |",
                    kind,
                    urls.name(),
                    nodes,
                    row.busiest,
                    row.join,
                    row.leave,
                    row.lookup_ns.0,
                    row.lookup_ns.1,
                    row.build_ms.0,
                    row.build_ms.1,
                    human_bytes(row.bytes),
                );
            }
        }
    }
    println!("\nran in {:.1} s", started.elapsed().as_secs_f64());
}

fn human_bytes(bytes: usize) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{} KiB", bytes.div_ceil(1 << 10))
    }
}
