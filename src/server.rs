//! Start-up and serving: load secrets and schema, open the database, make the tables
//! match, create the first Admin, and serve the router until shutdown.
//!
//! `build` is separate from `serve` so tests (and embedders) can register write hooks
//! and subscribe to committed changes before the first request. Socket.IO shares the
//! listener: its layer wraps the HTTP router, and its virtual requests call that router.
//! StaticBackend's SSE and WebSocket routes sit in front of both, and connect their
//! sockets in process through them.

use std::future::Future;
use std::sync::Arc;

use anyhow::Context;
use serde_json::json;
use tokio::net::TcpListener;

use crate::actions::Actions;
use crate::auth::{Auth, Identity, credentials, secrets};
use crate::config::Config;
use crate::conn;
use crate::error::ApiError;
use crate::files::Files;

use crate::http::{self, AppState};
use crate::queries::Queries;
use crate::realtime::cluster::{NodeDriver, SocketIoLayer};
use crate::realtime::staticbackend::StaticBackend;
use crate::realtime::{Realtime, relay};
use crate::records::{Records, WriteHook};
use crate::schema::value::SqlValue;
use crate::schema::{self, FieldType};
use crate::store::bus::Note;
use crate::store::manifest::{self, Manifest};
use crate::store::nodes::{self, Heartbeat, Node};
use crate::store::read_only::ReadLimits;
use crate::store::{Store, migrate};
use crate::users::Users;

/// A built, not yet serving, livebase.
pub struct App {
    pub state: AppState,
    socket_layer: SocketIoLayer,
    tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Keeps this node's `lb_nodes` row fresh while it serves; stopped (the row removed)
    /// once serving ends.
    heartbeat: Heartbeat,
}

impl App {
    /// `https` when the listener serves TLS (`--tls-cert`), else `http`.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }
}

pub async fn build(config: Config, extra_hooks: Vec<Arc<dyn WriteHook>>) -> anyhow::Result<App> {
    // Nodes share their data and their secrets through one PostgreSQL database; a
    // SQLite file is one node's alone, so a second node would serve other data.
    if config.redis_url.is_some() && !config.effective_database_url().starts_with("postgres") {
        anyhow::bail!(
            "--redis-url needs --database-url postgres://…: the nodes share one PostgreSQL database (SQLite is one node's own file)"
        );
    }
    // Before anything is written: an unreachable or too old Redis stops the start.
    let driver = match &config.redis_url {
        Some(url) => NodeDriver::connect(url).await?,
        None => NodeDriver::Off,
    };
    // A bad certificate should stop the start before anything is written.
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(crate::tls::load(cert, key)?),
        _ => None,
    };
    let schema = schema::load_dir(&config.schema_dir)?;
    if !config.schema_dir.exists() {
        // A mistyped path, or a start from another directory, would otherwise serve an
        // empty API without a word.
        tracing::warn!(
            "the schema directory {} (--schema-dir) does not exist: no objects are served",
            config.schema_dir.display()
        );
    }
    // Named here so that a path that cannot be used says which one it is.
    std::fs::create_dir_all(&config.data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the data directory {} (--data-dir): {e}",
            config.data_dir.display()
        )
    })?;
    let database_flag = match config.database_url {
        Some(_) => "--database-url",
        None => "--data-dir",
    };
    let store = Store::connect(&config.effective_database_url(), config.db_pool_size)
        .await
        .with_context(|| format!("opening the database ({database_flag})"))?;
    // Before anything else is written: on PostgreSQL the nodes agree on the secrets, and
    // this node is live (in `lb_nodes`) from here on.
    let node = Node::new(&config.listen);
    let secrets::Loaded {
        secrets,
        generated,
        kept_in,
    } = secrets::load_or_create(&config, &store, &node).await?;
    // Before the tables change: a node of a cluster serving other files than the
    // running ones would migrate them under their feet and answer requests differently.
    // (A lone node on PostgreSQL is not compared: restarting it with a new schema right
    // after a kill is an upgrade, not a disagreement.)
    if config.redis_url.is_some() {
        let manifest = Manifest::of(&schema, &config.queries_dir);
        manifest::agree(&store, &node, &manifest).await?;
    }
    let heartbeat = node.beat(&store);
    for note in migrate::apply_schema(&store, &schema, config.allow_destructive_schema).await? {
        tracing::warn!("{note}");
    }
    let queries = Queries::load(
        &config.queries_dir,
        &schema.roles,
        &store,
        ReadLimits {
            max_rows: config.max_page_size as usize,
            timeout: std::time::Duration::from_millis(config.query_time_limit_ms),
        },
    )
    .await?;
    let schema = Arc::new(schema);
    let auth = Auth::new(
        secrets,
        store.clone(),
        config.access_token_ttl,
        config.refresh_token_ttl,
    );
    let (realtime, socket_layer) = Realtime::new(&config, auth.clone(), schema.clone(), driver);
    let users = Users::new(
        auth.clone(),
        store.clone(),
        vec![Arc::new(realtime.clone())],
    );
    let actions = Actions::start(
        &config,
        store.clone(),
        &schema,
        realtime.clone(),
        queries.clone(),
        auth.secrets().app_name.clone(),
    )
    .await?;
    // Users first: its after hook revokes a changed identity before anything else (an
    // after action's emits included) can reach the old identity's sockets.
    let mut hooks: Vec<Arc<dyn WriteHook>> =
        vec![Arc::new(users.clone()), Arc::new(actions.clone())];
    hooks.extend(extra_hooks);
    let records = Records::new(
        store.clone(),
        schema,
        hooks,
        config.max_page_size,
        &node.id,
        config.redis_url.is_some(),
    );
    let files = Files::new(
        records.clone(),
        store.clone(),
        config.data_dir.join("files"),
        config.max_file_bytes,
    );
    follow_the_log(&config, &store, &records, &realtime).await?;
    realtime
        .start_presence(store.clone(), &node.id, config.redis_url.is_some())
        .await;
    listen_to_other_nodes(&store, &auth, &realtime, &actions);
    let state = AppState {
        records,
        auth,
        users,
        store,
        metrics: http::system::metrics_handle(),
        realtime,
        actions,
        files,
        queries,
        config: Arc::new(config),
        node,
    };
    announce_secrets(&kept_in, &state.auth.secrets().app_name, &generated);
    ensure_admin(&state).await?;
    Ok(App {
        state,
        socket_layer,
        tls,
        heartbeat,
    })
}

pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let store = app.state.store.clone();
    if let Ok(addr) = listener.local_addr() {
        app.state.node.listening(&addr.to_string());
    }
    let realtime = app.state.realtime.clone();
    let config = app.state.config.clone();
    let cors = http::cors_layer(&config.cors_origins);
    let grace = std::time::Duration::from_millis(config.shutdown_grace_ms);
    let auth = app.state.auth.clone();
    let router = http::app(app.state);
    realtime.serve(router.clone()).await?;
    let service = router
        .layer(app.socket_layer)
        // Before Socket.IO, which keeps each socket's request for the socket's life.
        .layer(axum::middleware::from_fn(conn::own_socket_request))
        // Outside the Socket.IO layer, which would take its paths for engine.io's.
        .layer(axum::middleware::from_fn(http::client_script::serve))
        .layer(axum::middleware::from_fn_with_state(
            realtime.clone(),
            crate::realtime::outbox::attach_transport,
        ));
    // StaticBackend's transports in front: each of their connections is a socket of
    // `service`, connected in process, so they are handed the service itself.
    let router = StaticBackend::new(&config, auth, service.clone())
        .router()
        .fallback_service(service)
        .layer(cors);
    // Sockets are long-lived: close them when shutdown begins, or it would wait on them.
    let closing = realtime.clone();
    let shutdown = async move {
        shutdown.await;
        closing.close().await;
    };
    let limits = conn::Limits {
        header_read_timeout: std::time::Duration::from_millis(config.header_read_timeout_ms),
        write_stall_timeout: std::time::Duration::from_millis(config.write_stall_timeout_ms),
        max_per_address: config.max_connections_per_address,
    };
    conn::serve(listener, app.tls, router, limits, shutdown, grace).await;
    // Idempotent: the shutdown future closed it already unless serving failed.
    realtime.close().await;
    app.heartbeat.stop().await;
    store.close().await;
    Ok(())
}

/// Builds and serves on `listener` until `shutdown` resolves.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = build(config, Vec::new()).await?;
    serve(listener, app, shutdown).await
}

/// What another node changed, acted on here (`store::bus`; PostgreSQL only): the same
/// steps its origin took, for this node's sockets and caches.
fn listen_to_other_nodes(store: &Store, auth: &Auth, realtime: &Realtime, actions: &Actions) {
    let (auth, realtime, actions) = (auth.clone(), realtime.clone(), actions.clone());
    store.listen(Arc::new(move |note: Note| {
        let (auth, realtime, actions) = (auth.clone(), realtime.clone(), actions.clone());
        Box::pin(async move {
            match note {
                Note::Revoked {
                    user_id,
                    username,
                    kept_session,
                } => {
                    auth.forget(user_id).await;
                    realtime
                        .disconnect_user_here(&username, kept_session.as_deref())
                        .await;
                }
                Note::Forget { user_id } => auth.forget(user_id).await,
                Note::Actions => actions.changed_elsewhere().await,
            }
        })
    }));
}

/// Shows the operator, once, the secrets livebase generated (not those given by flags),
/// with the app name the Backand SDK is configured with (`appName`).
fn announce_secrets(kept_in: &str, app_name: &str, generated: &[(&'static str, String)]) {
    if generated.is_empty() {
        return;
    }
    let mut text = format!(
        "\nlivebase generated these secrets (kept in {kept_in}; shown once):\n  {:<16} {app_name}\n",
        "app name"
    );
    for (name, value) in generated {
        text.push_str(&format!("  {name:<16} {value}\n"));
    }
    println!("{text}");
}

async fn admins(store: &Store) -> anyhow::Result<i64> {
    let mut sql = store.sql();
    sql.push(r#"SELECT COUNT(*) FROM "users" WHERE "role" = "#)
        .bind(SqlValue::Text("Admin".into()));
    let admins = store.fetch(&sql, &[FieldType::Int]).await?;
    Ok(admins.first().and_then(|r| r[0].as_i64()).unwrap_or(0))
}

/// The first start creates an Admin from the flags (generating what is not given).
async fn ensure_admin(state: &AppState) -> anyhow::Result<()> {
    let store = &state.store;
    let config = &state.config;
    if admins(store).await? > 0 {
        if config.admin_password.is_some() {
            println!(
                "livebase: --admin-password is ignored: an Admin already exists (it only sets the first Admin's password); to change a password run `livebase admin reset-password EMAIL [--password P]` with the same --data-dir/--database-url"
            );
        }
        return Ok(());
    }
    let (password, generated) = match &config.admin_password {
        Some(p) => (p.clone(), false),
        None => (secrets::new_token(), true),
    };
    let row = json!({
        "email": config.admin_email,
        "firstName": "Admin",
        "role": "Admin",
        "password": password,
    });
    let created = state
        .records
        .create(&Identity::system(), "users", row)
        .await;
    let record = match created {
        Ok(record) => record,
        // Nodes started together on one database each counted no Admin; the first to
        // commit made it, and the others' inserts meet its email.
        Err(ApiError::Conflict(_)) if admins(store).await? > 0 => {
            tracing::info!("another node created the first Admin at the same moment");
            return Ok(());
        }
        Err(e) => anyhow::bail!("creating the first Admin ({}): {e}", config.admin_email),
    };
    if let Some(token) = &config.admin_user_token {
        credentials::set_user_token(store, record.id, token).await?;
    }
    let user_token = credentials::user_token(store, record.id)
        .await?
        .unwrap_or_default();
    println!(
        "livebase created the first Admin user:\n  email:      {}\n  password:   {}\n  user token: {}\n",
        config.admin_email,
        if generated {
            password.as_str()
        } else {
            "(as given by --admin-password)"
        },
        user_token
    );
    Ok(())
}

/// Starts what the event log drives (`store::events`): delivery of every change
/// committed from now on, by any node (`relay`); after hooks a stopped node owed, now
/// and, with several nodes, every `OWED_EVERY` (a node killed mid-way leaves them to the
/// others); and pruning past the retention.
async fn follow_the_log(
    config: &Config,
    store: &Store,
    records: &Records,
    realtime: &Realtime,
) -> anyhow::Result<()> {
    const OWED_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
    const PRUNE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
    let (_, head) = store
        .event_bounds()
        .await
        .context("reading the event log")?;
    let several = config.redis_url.is_some();
    let wake = Arc::new(tokio::sync::Notify::new());
    if several {
        store.follow_events(wake.clone());
    }
    let follow = relay::Follow {
        wake,
        poll: several,
    };
    tokio::spawn(relay::run(
        records.clone(),
        records.subscribe(),
        realtime.clone(),
        head,
        follow,
    ));
    let owed = records.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(OWED_EVERY);
        loop {
            tick.tick().await;
            if owed.store().is_closed() {
                return;
            }
            // Alone, every owed event is a previous run's (whose row in `lb_nodes`, on
            // PostgreSQL, may still look live for a few seconds).
            let live = match several {
                false => Vec::new(),
                true => match nodes::live_ids(owed.store()).await {
                    Ok(live) => live,
                    Err(e) => {
                        tracing::debug!(error = %e, "listing live nodes");
                        continue;
                    }
                },
            };
            match owed.settle_owed_afters(&live).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(
                    n,
                    "ran the after actions of changes a stopped node committed"
                ),
                Err(e) => tracing::warn!(error = ?e, "running owed after actions"),
            }
            if !several {
                return;
            }
        }
    });
    let (pruned, keep_count, keep_ms) = (
        store.clone(),
        config.event_retention_count,
        config.event_retention_secs.saturating_mul(1000),
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            if pruned.is_closed() {
                return;
            }
            match pruned.prune_events(keep_count, keep_ms).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(n, "pruned the event log"),
                Err(e) => tracing::debug!(error = %e, "pruning the event log"),
            }
        }
    });
    Ok(())
}
