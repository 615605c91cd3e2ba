//! The `replay` scenario (livebase only; the peer and the floor have no resume): how fast
//! one reconnecting client gets what it missed. Per size, a fresh livebase; one user
//! writes that many `owned` rows in bulks (no socket listening), the relay delivers
//! them; then, each round, a new socket connects with `auth: {token, lastSeq}` (the
//! sequence number before the writes), waits for `recovered` (its identity rooms, where
//! none of these rows go), and joins `db-owned` with an ack. Timed from sending the join
//! to the ack, which follows the last replayed `db_created`. Every round checks the
//! replay: as many events as rows written, their `seq` strictly increasing up to the
//! ack's `seq`, the rows in the order they were written.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};

use crate::clients;
use crate::http::{self, Conn};
use crate::scenarios::Plan;
use crate::sio::{self, Ws};
use crate::stats::Table;
use crate::target::{self, Kind, Paths, Target};

/// Events livebase's relay keeps in memory for replays (`realtime::resume::RING_EVENTS`);
/// a client further behind has its events read from the event log (at most 10,000).
const RING_EVENTS: u64 = 4096;
/// Steps per bulk request (livebase's `http::bulk::MAX_STEPS`).
const BULK: u64 = 1000;
/// Bytes of each row's `body` field.
const BODY: usize = 100;
const CHANNEL: &str = "db-owned";
/// How long the relay may take to deliver the writes.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long any one frame may take to arrive.
const FRAME_PATIENCE: Duration = Duration::from_secs(15);
/// livebase's default `--socket-buffer`.
const LIVEBASE_SOCKET_BUFFER: usize = 1024;

/// One round: a socket that reconnected and joined.
struct Round {
    /// From starting the connection to `recovered`.
    connect: Duration,
    /// From sending the join to its ack.
    join: Duration,
    /// Bytes of the replayed Socket.IO packets (their text, without WebSocket framing).
    bytes: usize,
}

pub async fn run(paths: &Paths, plan: &Plan, kinds: &[Kind]) -> Result<Table> {
    // A replay is queued to the socket at once, between two deliveries, and may take
    // three quarters of its queue: livebase's default queue of 1024 messages per socket
    // holds a replay of 768.
    let largest = plan.replay_events.iter().copied().max().unwrap_or(0) as usize;
    let buffer = plan
        .replay_socket_buffer
        .unwrap_or(largest * 4 / 3 + LIVEBASE_SOCKET_BUFFER);
    let mut table = Table::new(
        &format!(
            "Replay to one reconnecting socket (`auth: {{token, lastSeq}}`, then `join(\"{CHANNEL}\")`; rows with a {BODY}-byte body; livebase `--socket-buffer {buffer}`)"
        ),
        &[
            "target",
            "events missed",
            "replayed from",
            "rounds",
            "replayed, checked",
            "connect → recovered ms",
            "join → ack ms, median (min–max)",
            "events/s",
            "MB/s",
            "bytes per event",
        ],
    );
    if !kinds.contains(&Kind::Livebase) {
        table.push(vec![
            "not run: livebase is not among the targets (the peer and the floor have no resume)"
                .into(),
        ]);
        return Ok(table);
    }
    if kinds.iter().any(|k| *k != Kind::Livebase) {
        println!("  (livebase only: the peer and the floor have no resume)");
    }
    let flags = ["--socket-buffer".to_string(), buffer.to_string()];
    let mut failed = Vec::new();
    for &n in &plan.replay_events {
        let from = if n <= RING_EVENTS {
            "relay memory"
        } else {
            "event log"
        };
        let target = Target::start_with(Kind::Livebase, paths, None, &flags).await?;
        let result = measure(&target, plan, n).await;
        target.stop().await?;
        let rounds = match result {
            Ok(rounds) => rounds,
            Err(e) => {
                let e = format!("{e:#}");
                let mut row = vec![
                    Kind::Livebase.name().into(),
                    n.to_string(),
                    from.into(),
                    "–".into(),
                    format!("**failed**: {e}"),
                ];
                row.resize(table.header.len(), "–".into());
                table.push(row);
                failed.push(format!("{n} events: {e}"));
                continue;
            }
        };
        let join: Vec<f64> = rounds.iter().map(|r| r.join.as_secs_f64()).collect();
        let connect: Vec<f64> = rounds.iter().map(|r| r.connect.as_secs_f64()).collect();
        let bytes = rounds.first().map_or(0, |r| r.bytes);
        let (mid, min, max) = (
            median(&join),
            join.iter().copied().fold(f64::MAX, f64::min),
            join.iter().copied().fold(0.0, f64::max),
        );
        table.push(vec![
            Kind::Livebase.name().into(),
            n.to_string(),
            from.into(),
            rounds.len().to_string(),
            format!("{n}/{n} each round"),
            format!("{:.1}", median(&connect) * 1000.0),
            format!(
                "{:.1} ({:.1}–{:.1})",
                mid * 1000.0,
                min * 1000.0,
                max * 1000.0
            ),
            format!("{:.0}", n as f64 / mid),
            format!("{:.1}", bytes as f64 / mid / 1e6),
            format!("{:.0}", bytes as f64 / n as f64),
        ]);
    }
    table.notes.push(format!(
        "Each size on a fresh livebase: one user writes the rows ({BULK} per `POST /1/bulk`), the relay delivers them to nobody; \
         each round a new socket connects with `lastSeq` = the number before the writes, waits for `recovered`, and joins `{CHANNEL}` \
         with an ack. Times are from sending the join to the ack; events/s and MB/s use the median. Every round checked: \
         all rows replayed, `seq` strictly increasing up to the ack's `seq`, rows in write order, `recovered: true`. \
         \"Replayed from\": the relay keeps the last {RING_EVENTS} events in memory; an older gap is read from the event log \
         (`connect → recovered` reads it too, for the identity rooms). livebase's own default `--socket-buffer` is \
         {LIVEBASE_SOCKET_BUFFER} messages: a replay is queued to the socket whole and may take three quarters of it, so at \
         the default one of more events stops there and answers `recovered: false` (`--replay-socket-buffer \
         {LIVEBASE_SOCKET_BUFFER}` shows it)."
    ));
    if !failed.is_empty() {
        for line in &failed {
            eprintln!("  replay failed: {line}");
        }
        bail!("replay failed its checks: {}", failed.join("; "));
    }
    Ok(table)
}

async fn measure(target: &Target, plan: &Plan, n: u64) -> Result<Vec<Round>> {
    let token = clients::tokens(target, 1).await?.remove(0);
    let before = delivered(target).await?;
    write_rows(target, &token, n).await?;
    let head = before + n;
    let until = Instant::now() + PATIENCE;
    loop {
        let now = delivered(target).await?;
        if now == head {
            break;
        }
        ensure!(
            now < head,
            "the relay delivered up to seq {now}, past the {head} the writes make: other events were logged"
        );
        ensure!(
            Instant::now() < until,
            "the relay delivered up to seq {now} of {head} within {PATIENCE:?} (a build without the event log?)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut rounds = Vec::with_capacity(plan.replay_rounds);
    for r in 0..plan.replay_rounds {
        let round = resume(target, &token, before, n, r)
            .await
            .with_context(|| format!("round {}", r + 1))?;
        rounds.push(round);
    }
    Ok(rounds)
}

/// `n` rows of `owned`, numbered 1…n in their `seq` field, written by one user.
async fn write_rows(target: &Target, token: &str, n: u64) -> Result<()> {
    let mut conn = Conn::open(target.addr, target::localhost()).await?;
    let mut start = 0;
    while start < n {
        let end = (start + BULK).min(n);
        let steps: Vec<Value> = (start..end)
            .map(|i| {
                let mut body = format!("row {} ", i + 1);
                body.push_str(&"x".repeat(BODY.saturating_sub(body.len())));
                json!({
                    "method": "POST",
                    "url": "/1/objects/owned",
                    "data": { "seq": i + 1, "body": body },
                })
            })
            .collect();
        clients::bulk(&mut conn, token, &steps).await?;
        start = end;
    }
    Ok(())
}

/// livebase's `livebase_events_delivered_seq` (0 before it delivered anything).
async fn delivered(target: &Target) -> Result<u64> {
    let mut conn = Conn::open(target.addr, target::localhost()).await?;
    let resp = conn
        .send(&http::request("GET", "/metrics", None, None))
        .await?;
    ensure!(resp.status == 200, "/metrics answered {}", resp.status);
    let text = String::from_utf8_lossy(&resp.body);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("livebase_events_delivered_seq "))
        .map(|v| v.trim().parse::<f64>())
        .transpose()
        .context("livebase_events_delivered_seq")?;
    Ok(value.unwrap_or(0.0) as u64)
}

/// One reconnecting socket: connect with `lastSeq = before`, wait for `recovered`, join
/// with an ack; checks and times the replay.
async fn resume(target: &Target, token: &str, before: u64, n: u64, r: usize) -> Result<Round> {
    let started = Instant::now();
    let auth = json!({ "token": token, "lastSeq": before });
    let mut ws = sio::connect_auth(target.addr, target::source(r), &auth).await?;
    let recovered = until_event(&mut ws, "recovered").await?;
    let connect = started.elapsed();
    ensure!(
        recovered["recovered"] == true,
        "`recovered` at connection said {recovered}"
    );

    let mut frames: Vec<String> = Vec::with_capacity(n as usize);
    let sent = Instant::now();
    sio::send(&mut ws, format!("421{}", json!(["join", CHANNEL]))).await?;
    let ack = loop {
        let frame = next(&mut ws).await.with_context(|| {
            format!(
                "{} of {n} events replayed, then no ack for the join",
                frames.len()
            )
        })?;
        if frame.starts_with("42[\"db_created\"") {
            frames.push(frame);
        } else if let Some(ack) = frame.strip_prefix("431") {
            break ack.to_string();
        } else if frame == "2" {
            sio::send(&mut ws, "3".into()).await?;
        } else {
            bail!(
                "unexpected frame during the replay (after {} events): {}",
                frames.len(),
                frame.chars().take(160).collect::<String>()
            );
        }
    };
    let join = sent.elapsed();

    let ack: Value = serde_json::from_str(&ack).context("join ack")?;
    let ack = &ack[0];
    ensure!(
        ack["ok"] == true && ack["recovered"] == true,
        "join ack {ack} after {} replayed events",
        frames.len()
    );
    ensure!(
        ack["seq"].as_u64() == Some(before + n),
        "join ack says seq {}, the writes ended at {}",
        ack["seq"],
        before + n
    );
    ensure!(
        frames.len() as u64 == n,
        "replayed {} events of the {n} missed",
        frames.len()
    );
    let mut last = before;
    let mut bytes = 0;
    for (k, frame) in frames.iter().enumerate() {
        bytes += frame.len();
        let event: Value = serde_json::from_str(&frame[2..]).context("a replayed event")?;
        let payload = &event[1];
        ensure!(
            payload["channel"] == CHANNEL,
            "event on {}",
            payload["channel"]
        );
        let seq = payload["seq"]
            .as_u64()
            .context("a replayed event without seq")?;
        ensure!(
            seq > last,
            "seq {seq} after {last}: not strictly increasing"
        );
        ensure!(
            payload["data"]["seq"].as_u64() == Some(k as u64 + 1),
            "replayed event {} carries row {}",
            k + 1,
            payload["data"]["seq"]
        );
        last = seq;
    }
    ensure!(
        last == before + n,
        "the last replayed seq is {last}, not {}",
        before + n
    );
    Ok(Round {
        connect,
        join,
        bytes,
    })
}

/// Reads until the event `name`, answering heartbeats; answers its first argument.
async fn until_event(ws: &mut Ws, name: &str) -> Result<Value> {
    let prefix = format!("42[\"{name}\"");
    loop {
        let frame = next(ws).await?;
        if frame.starts_with(&prefix) {
            let event: Value = serde_json::from_str(&frame[2..])?;
            return Ok(event[1].clone());
        }
        if frame == "2" {
            sio::send(ws, "3".into()).await?;
        }
    }
}

async fn next(ws: &mut Ws) -> Result<String> {
    tokio::time::timeout(FRAME_PATIENCE, sio::next_text(ws))
        .await
        .with_context(|| format!("no frame for {} s", FRAME_PATIENCE.as_secs()))?
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
