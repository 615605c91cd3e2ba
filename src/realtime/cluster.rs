//! One adapter type for one node and for several: socketioxide's Redis adapter over
//! livebase's own `NodeDriver`.
//!
//! Every socket handler is written once, against the aliases below. With `--redis-url`
//! the driver is `Redis`: each room emit, operator join/leave and disconnect is
//! published once on Redis and carried out by every node for its own sockets (the rooms
//! decide who receives, on every node alike). Without it the driver is `Off`: it
//! publishes nothing, and `Realtime::root` marks every operation local, so a single node
//! never encodes a request it would only send to itself.
//!
//! The driver is ours, not the crate's `RedisDriver`, for two reasons measured in its
//! source: the crate's driver holds one multiplexed connection that never reconnects or
//! resubscribes (one Redis restart would end cross-node delivery for good), and its
//! publish error is returned before the adapter delivers locally (Redis down would mean
//! this node's own sockets miss every emit). Here the connection is redis'
//! `ConnectionManager`, which reconnects and resubscribes by itself, and a publish that
//! fails is counted and logged once, and the emit still reaches this node's sockets.
//! Delivery across nodes is at most once: while Redis is away, the other nodes miss what
//! this one emits (the README's "Several nodes" says what that means for clients).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, PushKind};
use socketioxide_core::Uid;
use socketioxide_core::adapter::remote_packet::{
    RequestIn, RequestOut, RequestTypeIn, RequestTypeOut,
};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tokio::sync::mpsc;

/// The adapter of the one namespace, on one node or several.
pub type NodeAdapter = CustomRedisAdapter<socketioxide::adapter::Emitter, NodeDriver>;
/// A socket of this node.
pub type SocketRef = socketioxide::extract::SocketRef<NodeAdapter>;
/// The Socket.IO server handle.
pub type SocketIo = socketioxide::SocketIo<NodeAdapter>;
/// Operators over sockets selected by rooms (cluster-wide unless made `local`).
pub type BroadcastOperators = socketioxide::operators::BroadcastOperators<NodeAdapter>;
/// The layer wrapping the HTTP router.
pub type SocketIoLayer = socketioxide::layer::SocketIoLayer<NodeAdapter>;

/// Oldest Redis the adapter works with: it reads published messages as RESP3 pushes.
const MIN_REDIS_MAJOR: u32 = 7;
/// Longest a publish may take before it counts as failed (the emit goes on locally).
const PUBLISH_TIMEOUT: Duration = Duration::from_millis(500);
/// How often an idle node checks that Redis still answers (health and the log).
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How this node reaches the others.
#[derive(Clone)]
pub enum NodeDriver {
    /// One node: nothing is published, no other node exists.
    Off,
    /// Several nodes sharing one Redis.
    Redis(Arc<Link>),
}

/// What this node does with another node's room emit before its adapter delivers it:
/// charge `(rooms, bytes)` to the per-socket byte budget (`outbox`) and answer the
/// rooms of the sockets to leave out (behind on their budget), if any.
pub type RemoteEmit = Box<dyn Fn(&[String], u64) -> Option<Arc<Vec<String>>> + Send + Sync>;

/// What the Redis push handler needs besides the handlers.
#[derive(Default)]
struct Accounting {
    remote_emit: OnceLock<RemoteEmit>,
    /// This node's adapter id, learnt from its first request: Redis hands a node its
    /// own publishes back, which the adapter ignores and the budget must too.
    own: OnceLock<Uid>,
}

/// The connection to Redis, shared by every adapter operation of this node.
pub struct Link {
    conn: ConnectionManager,
    /// Published channel → the adapter's stream for it.
    handlers: Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>,
    accounting: Arc<Accounting>,
    /// Set while Redis does not answer; cleared by the next command that succeeds.
    down: AtomicBool,
}

/// A Redis error, as the adapter reports it.
#[derive(Debug, thiserror::Error)]
#[error("redis: {0}")]
pub struct DriverError(#[from] redis::RedisError);

impl NodeDriver {
    /// Connects to `url`, checks the server is Redis 7 or newer, and starts watching it.
    /// Every failure names `--redis-url` and never shows the URL's password.
    pub async fn connect(url: &str) -> anyhow::Result<NodeDriver> {
        let shown = crate::store::redact(url);
        let info = url
            .into_connection_info()
            .map_err(|e| anyhow::anyhow!("--redis-url {shown}: not a Redis URL: {e}"))?;
        // Published messages arrive as pushes, which only RESP3 has.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let info = info.set_redis_settings(settings);
        let client =
            redis::Client::open(info).map_err(|e| anyhow::anyhow!("--redis-url {shown}: {e}"))?;
        let handlers: Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>> = Arc::default();
        let route = handlers.clone();
        let accounting = Arc::new(Accounting::default());
        let account = accounting.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(5)))
            .set_response_timeout(Some(Duration::from_secs(5)))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1))
            .set_automatic_resubscription()
            .set_push_sender(move |push: PushInfo| {
                deliver(push, &route, &account);
                Ok::<(), std::convert::Infallible>(())
            });
        let mut conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(|e| anyhow::anyhow!("--redis-url {shown}: cannot connect: {e}"))?;
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| anyhow::anyhow!("--redis-url {shown}: INFO failed: {e}"))?;
        let version = info
            .lines()
            .find_map(|l| l.strip_prefix("redis_version:"))
            .map(str::trim)
            .unwrap_or("unknown")
            .to_string();
        let major = version
            .split('.')
            .next()
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if major < MIN_REDIS_MAJOR {
            anyhow::bail!(
                "--redis-url {shown}: Redis {version} is too old; several nodes need Redis {MIN_REDIS_MAJOR} or newer (RESP3 pub/sub)"
            );
        }
        let link = Arc::new(Link {
            conn,
            handlers,
            accounting,
            down: AtomicBool::new(false),
        });
        tokio::spawn(probe(Arc::downgrade(&link)));
        tracing::info!(redis = %shown, version, "realtime spans nodes through Redis");
        Ok(NodeDriver::Redis(link))
    }

    /// The adapter's shared state, with channels under `prefix` (`--redis-prefix`), so
    /// several apps (or test runs) can share one Redis.
    pub fn adapter_state(self, prefix: &str) -> RedisAdapterCtr<NodeDriver> {
        let config = RedisAdapterConfig::default().with_prefix(prefix.to_string());
        RedisAdapterCtr::new_with_driver(self, config)
    }

    /// Sets what this node does with other nodes' room emits (see `RemoteEmit`); once.
    pub fn on_remote_emit(&self, remote_emit: RemoteEmit) {
        if let NodeDriver::Redis(link) = self {
            let _ = link.accounting.remote_emit.set(remote_emit);
        }
    }

    /// Whether other nodes may exist (operations must not be marked local).
    pub fn spans_nodes(&self) -> bool {
        matches!(self, NodeDriver::Redis(_))
    }

    /// `None` on one node; else whether Redis answers now.
    pub fn redis_up(&self) -> Option<bool> {
        match self {
            NodeDriver::Off => None,
            NodeDriver::Redis(link) => Some(!link.down.load(Ordering::Relaxed)),
        }
    }
}

impl Link {
    /// Notes the outcome of a Redis command: the first failure and the recovery are
    /// logged once each, so an outage is two lines, not one per emit.
    fn outcome<T>(&self, what: &'static str, result: &Result<T, String>) {
        match result {
            Ok(_) => {
                if self.down.swap(false, Ordering::Relaxed) {
                    tracing::warn!("Redis answers again: emits reach the other nodes");
                    metrics::gauge!("livebase_cluster_redis_up").set(1.0);
                }
            }
            Err(e) => {
                if !self.down.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        error = %e,
                        what,
                        "Redis does not answer: this node serves its own sockets, other nodes miss its emits until it is back"
                    );
                    metrics::gauge!("livebase_cluster_redis_up").set(0.0);
                }
            }
        }
    }
}

/// Hands a published message to the adapter's stream for its channel, another node's
/// room emit first charged to the byte budget (`charge`). A stream that is full (its
/// node is too slow to keep up) loses the message, counted.
fn deliver(
    push: PushInfo,
    handlers: &RwLock<HashMap<String, mpsc::Sender<ChanItem>>>,
    accounting: &Accounting,
) {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) || push.data.len() < 2 {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(chan), Some(body)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(chan), Ok(body)) = (
        redis::from_redis_value::<String>(chan),
        redis::from_redis_value::<Vec<u8>>(body),
    ) else {
        metrics::counter!("livebase_cluster_receive_drops_total", "reason" => "unreadable")
            .increment(1);
        return;
    };
    let body = match accounting.remote_emit.get() {
        Some(remote_emit) if chan.contains("-request#") => {
            charge(body, remote_emit, accounting.own.get())
        }
        _ => body,
    };
    let handlers = handlers.read().unwrap_or_else(|e| e.into_inner());
    let Some(tx) = handlers.get(&chan) else {
        return;
    };
    if tx.try_send((chan, body)).is_err() {
        metrics::counter!("livebase_cluster_receive_drops_total", "reason" => "full").increment(1);
    }
}

/// Another node's room emit, as this node will deliver it: its bytes charged to the
/// rooms it targets here, and the sockets behind on their budget added to its
/// exceptions (re-encoded only then). Anything else passes as it came.
fn charge(body: Vec<u8>, remote_emit: &RemoteEmit, own: Option<&Uid>) -> Vec<u8> {
    let Ok(mut request) = rmp_serde::from_slice::<RequestIn>(&body) else {
        return body;
    };
    if own == Some(&request.node_id) {
        return body;
    }
    let (RequestTypeIn::Broadcast(packet), Some(opts)) = (&request.r#type, request.opts.as_mut())
    else {
        return body;
    };
    let rooms: Vec<String> = opts.rooms.iter().map(|r| r.to_string()).collect();
    let Some(behind) = remote_emit(&rooms, body.len() as u64) else {
        return body;
    };
    opts.except
        .extend(behind.iter().map(|r| std::borrow::Cow::Owned(r.clone())));
    let out = RequestOut::new(request.node_id, RequestTypeOut::Broadcast(packet), opts);
    rmp_serde::to_vec(&out).unwrap_or(body)
}

/// Asks Redis every second whether it is there, so `/healthz` and the log say so even
/// when nothing is emitted; a failed command also makes the manager reconnect.
async fn probe(link: std::sync::Weak<Link>) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(link) = link.upgrade() else { return };
        let mut conn = link.conn.clone();
        let answer = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await;
        let result = match answer {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 500 ms".to_string()),
        };
        link.outcome("ping", &result);
    }
}

impl Driver for NodeDriver {
    type Error = DriverError;

    /// Never fails: a message Redis did not take (or that was not offered, Redis being
    /// known to be away) is counted and logged once, and the adapter goes on to deliver
    /// the emit to this node's sockets.
    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), DriverError> {
        let NodeDriver::Redis(link) = self else {
            return Ok(());
        };
        // While Redis is known to be away, emits do not wait on it one by one (the relay
        // would fall behind); the probe notices its return within a second.
        if link.down.load(Ordering::Relaxed) {
            metrics::counter!("livebase_cluster_publish_failures_total").increment(1);
            return Ok(());
        }
        if link.accounting.own.get().is_none()
            && let Ok(request) = rmp_serde::from_slice::<RequestIn>(&val)
        {
            let _ = link.accounting.own.set(request.node_id);
        }
        let mut conn = link.conn.clone();
        let sent = tokio::time::timeout(
            PUBLISH_TIMEOUT,
            redis::cmd("PUBLISH")
                .arg(&chan)
                .arg(val)
                .query_async::<i64>(&mut conn),
        )
        .await;
        let result = match sent {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 500 ms".to_string()),
        };
        if result.is_ok() {
            metrics::counter!("livebase_cluster_publishes_total").increment(1);
        } else {
            metrics::counter!("livebase_cluster_publish_failures_total").increment(1);
        }
        link.outcome("publish", &result);
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, DriverError> {
        let NodeDriver::Redis(link) = self else {
            return Ok(MessageStream::new_empty());
        };
        let (tx, rx) = mpsc::channel(size);
        // The handler first: a message published right after SUBSCRIBE returns must
        // find it.
        link.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(chan.clone(), tx);
        if let Err(e) = link.conn.clone().subscribe(&chan).await {
            link.handlers
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&chan);
            return Err(e.into());
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), DriverError> {
        let NodeDriver::Redis(link) = self else {
            return Ok(());
        };
        link.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&chan);
        link.conn.clone().unsubscribe(&chan).await?;
        Ok(())
    }

    /// How many nodes listen on `chan` (this one included). A node that cannot ask
    /// answers 1, so cluster-wide queries do not wait on nodes they cannot reach.
    async fn num_serv(&self, chan: &str) -> Result<u16, DriverError> {
        let NodeDriver::Redis(link) = self else {
            return Ok(1);
        };
        let mut conn = link.conn.clone();
        let answer: redis::RedisResult<(String, u16)> = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut conn)
            .await;
        Ok(answer.map(|(_, n)| n.max(1)).unwrap_or(1))
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;

    #[tokio::test]
    async fn off_publishes_nothing_and_counts_one_node() {
        let off = NodeDriver::Off;
        assert!(off.publish("c".into(), vec![1, 2, 3]).await.is_ok());
        assert_eq!(off.num_serv("c").await.unwrap(), 1);
        assert!(!off.spans_nodes());
        assert_eq!(off.redis_up(), None);
        // The adapter pipes this stream until it ends: it must end at once.
        let mut stream = off.subscribe("c".into(), 8).await.unwrap();
        assert!(stream.next().await.is_none());
        assert!(off.unsubscribe("c".into()).await.is_ok());
    }

    /// The adapter's wire form of a room emit to `rooms`, sent by `node`.
    fn room_emit(node: Uid, rooms: &[&'static str]) -> Vec<u8> {
        use socketioxide_core::adapter::BroadcastOptions;
        use socketioxide_core::packet::Packet;
        let packet = Packet::event(
            "/",
            socketioxide_core::Value::Str("[\"evt\",1]".into(), None),
        );
        let mut opts = BroadcastOptions::default();
        opts.rooms
            .extend(rooms.iter().map(|r| std::borrow::Cow::Borrowed(*r)));
        rmp_serde::to_vec(&RequestOut::new(
            node,
            RequestTypeOut::Broadcast(&packet),
            &opts,
        ))
        .unwrap()
    }

    fn decoded(body: &[u8]) -> RequestIn {
        rmp_serde::from_slice(body).unwrap()
    }

    #[test]
    fn another_nodes_emit_is_charged_and_leaves_out_those_behind() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        let behind: RemoteEmit = Box::new(move |rooms: &[String], size: u64| {
            log.lock().unwrap().push((rooms.to_vec(), size));
            Some(Arc::new(vec!["sock:slow".to_string()]))
        });
        let (me, other) = (Uid::new(), Uid::new());
        let body = room_emit(other, &["user:alice", "role:User"]);
        let out = decoded(&charge(body.clone(), &behind, Some(&me)));
        assert_eq!(
            seen.lock().unwrap().as_slice(),
            &[(
                vec!["user:alice".to_string(), "role:User".to_string()],
                body.len() as u64
            )]
        );
        let opts = out.opts.unwrap();
        assert_eq!(opts.except.as_slice(), ["sock:slow"]);
        assert_eq!(opts.rooms.as_slice(), ["user:alice", "role:User"]);
        assert!(matches!(out.r#type, RequestTypeIn::Broadcast(_)));
        assert_eq!(out.node_id, other);

        // This node's own emit, handed back by Redis: neither charged nor changed.
        let mine = room_emit(me, &["user:bob"]);
        assert_eq!(charge(mine.clone(), &behind, Some(&me)), mine);
        assert_eq!(seen.lock().unwrap().len(), 1);
        // Nobody behind: passed on as it came, but charged.
        let nobody: RemoteEmit = Box::new(|_: &[String], _: u64| None);
        assert_eq!(charge(body.clone(), &nobody, Some(&me)), body);
        // Not a request at all: untouched.
        assert_eq!(charge(vec![1, 2, 3], &behind, Some(&me)), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn a_url_that_is_not_redis_is_refused_naming_the_flag() {
        let Err(e) = NodeDriver::connect("http://user:secret@example.com/").await else {
            panic!("an http URL was taken for Redis");
        };
        let text = e.to_string();
        assert!(text.contains("--redis-url"), "{text}");
        assert!(!text.contains("secret"), "the password was shown: {text}");
    }

    #[tokio::test]
    async fn a_closed_port_is_refused_naming_the_flag() {
        let Err(e) = NodeDriver::connect("redis://:pw@127.0.0.1:1/").await else {
            panic!("nothing listens on port 1");
        };
        let text = e.to_string();
        assert!(
            text.contains("--redis-url") && text.contains("cannot connect"),
            "{text}"
        );
        assert!(!text.contains("pw@"), "the password was shown: {text}");
    }
}
