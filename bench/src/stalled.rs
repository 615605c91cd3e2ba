//! Clients that stop reading, for the soak: sockets that joined a channel carrying
//! large messages and keep answering heartbeats blindly (a pong every few seconds, the
//! pings never read), a publisher that feeds that channel, and a watch on the server's
//! side of every stopped reader's TCP connection in `/proc/net/tcp`, which tells when
//! the server let each one go, whichever server it is.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::sio;
use crate::target::Target;

/// The channel the large messages go to.
const CHANNEL: &str = "bulk";
/// How often a stalled reader sends its blind pong.
const PONG_EVERY: Duration = Duration::from_secs(5);

/// A stopped reader that pongs blindly; dropping it closes its connection.
pub struct Stalled {
    pub local: SocketAddr,
    pong: JoinHandle<()>,
}

impl Drop for Stalled {
    fn drop(&mut self) {
        self.pong.abort();
    }
}

/// Connects `count` sockets, joins them to the bulk channel and stops reading.
pub async fn readers(
    target: &Target,
    token: &str,
    count: usize,
    first_source: usize,
) -> Result<Vec<Stalled>> {
    let mut all = Vec::new();
    for i in 0..count {
        let mut ws =
            sio::connect(target.addr, crate::target::source(first_source + i), token).await?;
        let local = ws.get_ref().local_addr()?;
        sio::send(&mut ws, format!("42{}", json!(["join", CHANNEL]))).await?;
        let (mut sink, unread) = ws.split();
        let pong = tokio::spawn(async move {
            let _unread = unread;
            loop {
                tokio::time::sleep(PONG_EVERY).await;
                if sink.send(Message::Text("3".into())).await.is_err() {
                    return;
                }
            }
        });
        all.push(Stalled { local, pong });
    }
    Ok(all)
}

/// Publishes `sizes` (bytes of data, in turn) into the bulk channel every `every` for
/// `duration`, reading its own socket meanwhile; the count sent.
pub async fn publish(
    target: &Target,
    token: &str,
    source: usize,
    sizes: &[usize],
    every: Duration,
    duration: Duration,
) -> Result<JoinHandle<u64>> {
    let mut ws = sio::connect(target.addr, crate::target::source(source), token).await?;
    let payloads: Vec<String> = sizes
        .iter()
        .map(|n| {
            format!(
                "42{}",
                json!(["chan_in", { "channel": CHANNEL, "data": "z".repeat(*n) }])
            )
        })
        .collect();
    Ok(tokio::spawn(async move {
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < duration {
            let packet = payloads[sent as usize % payloads.len()].clone();
            if sio::send(&mut ws, packet).await.is_err() {
                break;
            }
            sent += 1;
            let next = tokio::time::Instant::now() + every;
            while let Ok(Some(Ok(message))) = tokio::time::timeout_at(next, ws.next()).await {
                if matches!(&message, Message::Text(t) if t.as_str() == "2")
                    && sio::send(&mut ws, "3".into()).await.is_err()
                {
                    return sent;
                }
            }
        }
        sent
    }))
}

/// When the server let each connection go: seconds after the watch started, or `None`
/// while its side of the connection is still established.
pub struct GoneWatch {
    pub gone: Arc<std::sync::Mutex<Vec<Option<f64>>>>,
    running: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl GoneWatch {
    pub fn start(server: SocketAddr, clients: Vec<SocketAddr>) -> GoneWatch {
        let gone = Arc::new(std::sync::Mutex::new(vec![None; clients.len()]));
        let running = Arc::new(AtomicBool::new(true));
        let task = {
            let (gone, running) = (gone.clone(), running.clone());
            tokio::spawn(async move {
                let t0 = Instant::now();
                while running.load(Ordering::Relaxed) {
                    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
                    {
                        let mut gone = gone.lock().unwrap();
                        for (i, client) in clients.iter().enumerate() {
                            if gone[i].is_none() && !established(&table, server, *client) {
                                gone[i] = Some(t0.elapsed().as_secs_f64());
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            })
        };
        GoneWatch {
            gone,
            running,
            task,
        }
    }

    pub async fn stop(self) -> Vec<Option<f64>> {
        self.running.store(false, Ordering::Relaxed);
        let _ = self.task.await;
        self.gone.lock().unwrap().clone()
    }
}

/// `/proc/net/tcp`'s form of an IPv4 address and port: `0100007F:1F90`.
fn hex(addr: SocketAddr) -> Option<String> {
    let SocketAddr::V4(v4) = addr else {
        return None;
    };
    Some(format!(
        "{:08X}:{:04X}",
        u32::from_le_bytes(v4.ip().octets()),
        v4.port()
    ))
}

/// Whether the server's side of the connection to `client` is ESTABLISHED (state 01).
fn established(table: &str, server: SocketAddr, client: SocketAddr) -> bool {
    let (Some(local), Some(remote)) = (hex(server), hex(client)) else {
        return false;
    };
    table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3 && fields[1] == local && fields[2] == remote && fields[3] == "01"
    })
}

/// "n/m within S s" for the readers that went, and how many did not.
pub fn summary(gone: &[Option<f64>]) -> String {
    let went: Vec<f64> = gone.iter().flatten().copied().collect();
    if went.is_empty() {
        return format!("none of {}", gone.len());
    }
    let latest = went.iter().copied().fold(0.0, f64::max);
    format!("{}/{} within {latest:.0} s", went.len(), gone.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_addresses_and_states() {
        let server: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let client: SocketAddr = "127.0.0.5:40000".parse().unwrap();
        assert_eq!(hex(server).unwrap(), "0100007F:1F90");
        let table =
            "  sl  local_address rem_address   st\n   0: 0100007F:1F90 0500007F:9C40 01 0\n";
        assert!(established(table, server, client));
        let closing = table.replace(" 01 ", " 04 ");
        assert!(!established(&closing, server, client));
        assert_eq!(summary(&[Some(3.0), None, Some(12.4)]), "2/3 within 12 s");
        assert_eq!(summary(&[None, None]), "none of 2");
    }
}
