//! Command-line and environment configuration.
//!
//! Every flag is also an environment variable (`LIVEBASE_` + the flag in upper snake
//! case). Defaults run the example app out of the box: SQLite under `./data`, the
//! `schema/` folder, listening on loopback. Secrets left unset are generated on first
//! start and kept in the data directory (see `auth::secrets`).

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Parser)]
#[command(name = "livebase", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run the server (the default when no subcommand is given).
    Serve,
    /// Manage the actions of a running server.
    Actions {
        #[command(subcommand)]
        command: ActionsCommand,
    },
    /// Operator tasks on the database named by the flags (`--data-dir`,
    /// `--database-url`), with or without a server running on it.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminCommand {
    /// Sets a user's password (generated unless `--password` is given) and ends every
    /// session of that user: for an Admin locked out, or the first Admin's password
    /// after `--admin-password` changed (that flag only applies on the first start).
    ResetPassword(ResetPasswordArgs),
}

#[derive(Debug, Clone, clap::Args)]
pub struct ResetPasswordArgs {
    /// The user's email.
    pub email: String,
    /// The new password (else one is generated and printed).
    #[arg(long, env = "LIVEBASE_NEW_PASSWORD")]
    pub password: Option<String>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum ActionsCommand {
    /// Upload a folder of `<object>/<trigger>/<name>.js` files to a running server:
    /// new actions are created, changed ones get their next version.
    Push(PushArgs),
    /// List the kept versions of an action, newest first: version, date, what saved
    /// it, and the first line of its code.
    Versions(VersionsArgs),
    /// Save an earlier version's code as the action's next version.
    Rollback(RollbackArgs),
}

/// The running server the `actions` commands talk to, and the credentials they use.
#[derive(Debug, Clone, clap::Args)]
pub struct ServerArgs {
    /// The server (http only: run this on the server's host or through a tunnel).
    #[arg(long, env = "LIVEBASE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The server's master token.
    #[arg(long = "master-token", env = "LIVEBASE_MASTER_TOKEN")]
    pub master_token: String,
    /// The user token of an Admin (the first Admin's is printed on first start, or set
    /// with `--admin-user-token`): the master token acts as a user.
    #[arg(long = "user-token", env = "LIVEBASE_ADMIN_USER_TOKEN")]
    pub user_token: String,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PushArgs {
    /// The actions folder.
    #[arg(default_value = "actions")]
    pub dir: PathBuf,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct VersionsArgs {
    /// The action, as `<object>/<trigger>/<name>` (its path under `actions/`).
    pub action: String,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RollbackArgs {
    /// The action, as `<object>/<trigger>/<name>` (its path under `actions/`).
    pub action: String,
    /// The version whose code becomes the next version (see `livebase actions versions`).
    #[arg(long)]
    pub version: i64,
    #[command(flatten)]
    pub server: ServerArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "LIVEBASE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,

    /// Database URL: `sqlite://path` or `postgres://…`. Default: SQLite file in the data dir.
    #[arg(long, env = "LIVEBASE_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Directory for the SQLite database and generated secrets.
    #[arg(long, env = "LIVEBASE_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Directory holding `<object>.json` schema files.
    #[arg(long, env = "LIVEBASE_SCHEMA_DIR", default_value = "schema")]
    pub schema_dir: PathBuf,

    /// Directory holding `<object>/<trigger>/<name>.js` actions.
    #[arg(long, env = "LIVEBASE_ACTIONS_DIR", default_value = "actions")]
    pub actions_dir: PathBuf,

    /// Directory holding `<name>.sql` named queries (see docs/queries.md); a missing
    /// directory means no queries.
    #[arg(long, env = "LIVEBASE_QUERIES_DIR", default_value = "queries")]
    pub queries_dir: PathBuf,

    /// Wall-time limit of one named query, in milliseconds.
    #[arg(long, env = "LIVEBASE_QUERY_TIME_LIMIT_MS", default_value_t = 5000)]
    pub query_time_limit_ms: u64,

    /// Application name (Backand `appName`). Generated defaults to `livebase`.
    #[arg(long, env = "LIVEBASE_APP_NAME")]
    pub app_name: Option<String>,

    /// Token for anonymous (role Public) access via the `AnonymousToken` header.
    #[arg(long, env = "LIVEBASE_ANONYMOUS_TOKEN")]
    pub anonymous_token: Option<String>,

    /// Token required in the `SignUpToken` header by `POST /1/user/signup`.
    #[arg(long, env = "LIVEBASE_SIGNUP_TOKEN")]
    pub signup_token: Option<String>,

    /// Master token; `Basic base64(master:userToken)` acts as that user and passes every check.
    #[arg(long, env = "LIVEBASE_MASTER_TOKEN")]
    pub master_token: Option<String>,

    /// Email of the first Admin user, created on first start.
    #[arg(
        long,
        env = "LIVEBASE_ADMIN_EMAIL",
        default_value = "admin@livebase.local"
    )]
    pub admin_email: String,

    /// Password of the first Admin user (generated and printed once when unset).
    #[arg(long, env = "LIVEBASE_ADMIN_PASSWORD")]
    pub admin_password: Option<String>,

    /// User token of the first Admin user (generated when unset).
    #[arg(long, env = "LIVEBASE_ADMIN_USER_TOKEN")]
    pub admin_user_token: Option<String>,

    /// Secret that signs access and refresh tokens (generated and kept when unset).
    #[arg(long, env = "LIVEBASE_JWT_SECRET")]
    pub jwt_secret: Option<String>,

    /// Redis (7 or newer) shared by several nodes: realtime events reach sockets on
    /// every node. Needs a PostgreSQL `--database-url` shared by the same nodes.
    #[arg(long, env = "LIVEBASE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every Redis channel this app uses, so several apps (or environments)
    /// can share one Redis. Every node of one app must use the same prefix.
    #[arg(long, env = "LIVEBASE_REDIS_PREFIX", default_value = "livebase")]
    pub redis_prefix: String,

    /// Allowed CORS origins, comma separated; `*` allows any. An allowed origin is
    /// answered with itself and credentials allowed.
    #[arg(long, env = "LIVEBASE_CORS_ORIGINS", default_value = "*")]
    pub cors_origins: String,

    /// Log format.
    #[arg(long, env = "LIVEBASE_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,

    /// Lifetime of an access token, in seconds.
    #[arg(long, env = "LIVEBASE_ACCESS_TOKEN_TTL", default_value_t = 3600)]
    pub access_token_ttl: u64,

    /// Lifetime of a refresh token, in seconds.
    #[arg(long, env = "LIVEBASE_REFRESH_TOKEN_TTL", default_value_t = 30 * 24 * 3600)]
    pub refresh_token_ttl: u64,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "LIVEBASE_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Largest file the built-in `files` action stores, in bytes once decoded. Its
    /// upload (base64 in JSON) may be larger than `--max-body-bytes`: that route alone
    /// accepts a body up to the base64 size of this limit plus room for the filename.
    #[arg(long, env = "LIVEBASE_MAX_FILE_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub max_file_bytes: usize,

    /// Sign-in, sign-up and password-reset requests allowed per client IP address per
    /// minute, once its burst is spent; 0 turns the limit off.
    #[arg(long, env = "LIVEBASE_AUTH_RATE_PER_MINUTE", default_value_t = 30)]
    pub auth_rate_per_minute: u32,

    /// How many of those requests one address may make at once before the rate applies.
    #[arg(long, env = "LIVEBASE_AUTH_RATE_BURST", default_value_t = 10)]
    pub auth_rate_burst: u32,

    /// Largest `pageSize` a list request may ask for.
    #[arg(long, env = "LIVEBASE_MAX_PAGE_SIZE", default_value_t = 1000)]
    pub max_page_size: u32,

    /// Database connection pool size.
    #[arg(long, env = "LIVEBASE_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: u32,

    /// Pick up changed files in the actions directory while running (`--watch false`
    /// turns it off, e.g. in production).
    #[arg(long, env = "LIVEBASE_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch: bool,

    /// Wall-time limit of one action invocation, in milliseconds.
    #[arg(long, env = "LIVEBASE_ACTION_TIME_LIMIT_MS", default_value_t = 1000)]
    pub action_time_limit_ms: u64,

    /// Memory limit of one action runtime, in MiB.
    #[arg(long, env = "LIVEBASE_ACTION_MEMORY_LIMIT_MIB", default_value_t = 64)]
    pub action_memory_limit_mib: usize,

    /// JavaScript stack limit of one action runtime, in KiB.
    #[arg(long, env = "LIVEBASE_ACTION_STACK_LIMIT_KIB", default_value_t = 1024)]
    pub action_stack_limit_kib: usize,

    /// Most Socket.IO connections served at once; more are refused with an error saying so.
    #[arg(long, env = "LIVEBASE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Milliseconds a socket may stay connected without authenticating.
    #[arg(
        long,
        env = "LIVEBASE_SOCKET_AUTH_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub socket_auth_timeout_ms: u64,

    /// Largest Socket.IO message accepted from a client, in bytes; a bigger one closes
    /// that connection.
    #[arg(long, env = "LIVEBASE_SOCKET_MAX_PAYLOAD", default_value_t = 1024 * 1024)]
    pub socket_max_payload: u64,

    /// Messages queued for one socket before further ones are dropped for it; a socket
    /// whose queue is full is disconnected at its next heartbeat.
    #[arg(long, env = "LIVEBASE_SOCKET_BUFFER", default_value_t = 1024)]
    pub socket_buffer: usize,

    /// Channels (`join`, `db-` channels included) one socket may be in at once; a
    /// further `join` is refused with an error saying so.
    #[arg(long, env = "LIVEBASE_SOCKET_MAX_CHANNELS", default_value_t = 100)]
    pub socket_max_channels: usize,

    /// Milliseconds between heartbeats; a socket that does not answer one within
    /// `--socket-ping-timeout-ms` (a client that stopped reading) is disconnected.
    #[arg(
        long,
        env = "LIVEBASE_SOCKET_PING_INTERVAL_MS",
        default_value_t = 25_000
    )]
    pub socket_ping_interval_ms: u64,

    /// Milliseconds to wait for a heartbeat answer.
    #[arg(
        long,
        env = "LIVEBASE_SOCKET_PING_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub socket_ping_timeout_ms: u64,

    /// Bytes one socket may be behind (queued for it, not yet written); past it the
    /// socket misses events (counted) until it is back under half of it, and a socket
    /// behind for `--socket-ping-timeout-ms` is disconnected.
    #[arg(long, env = "LIVEBASE_SOCKET_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub socket_buffer_bytes: u64,

    /// Milliseconds a client has to send a whole request head (headers); a connection
    /// that takes longer, or idles that long between requests, is closed.
    #[arg(
        long,
        env = "LIVEBASE_HEADER_READ_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub header_read_timeout_ms: u64,

    /// Milliseconds a connection's writes may make no progress (a client that stopped
    /// reading) before the connection is closed, upgraded WebSockets included; 0 turns
    /// the guard off.
    #[arg(
        long,
        env = "LIVEBASE_WRITE_STALL_TIMEOUT_MS",
        default_value_t = 20_000
    )]
    pub write_stall_timeout_ms: u64,

    /// Connections one client IP address may hold open at once (HTTP and WebSocket);
    /// more are answered 503 and closed. 0 turns the cap off.
    #[arg(
        long,
        env = "LIVEBASE_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 512
    )]
    pub max_connections_per_address: usize,

    /// Seconds the event log keeps a committed change's event, for clients that
    /// reconnect and for a node that fell behind (pruned in the background, at most a
    /// minute late).
    #[arg(long, env = "LIVEBASE_EVENT_RETENTION_SECS", default_value_t = 86_400)]
    pub event_retention_secs: u64,

    /// Events the log keeps at most, newest first, whatever their age.
    #[arg(
        long,
        env = "LIVEBASE_EVENT_RETENTION_COUNT",
        default_value_t = 100_000
    )]
    pub event_retention_count: u64,

    /// Milliseconds shutdown (SIGTERM, Ctrl-C) waits for in-flight requests before it
    /// closes the connections still open (a client that never finishes its request
    /// would otherwise hold the process up).
    #[arg(long, env = "LIVEBASE_SHUTDOWN_GRACE_MS", default_value_t = 5000)]
    pub shutdown_grace_ms: u64,

    /// PEM certificate chain (leaf first): serve HTTPS and WSS instead of HTTP and WS.
    #[arg(long, env = "LIVEBASE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "LIVEBASE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Allow schema changes that lose data (dropped fields, changed types).
    #[arg(
        long,
        env = "LIVEBASE_ALLOW_DESTRUCTIVE_SCHEMA",
        default_value_t = false
    )]
    pub allow_destructive_schema: bool,
}

impl Config {
    /// Configuration for embedding and tests: every default as on the command line.
    pub fn default_with(data_dir: PathBuf, schema_dir: PathBuf) -> Self {
        let mut cli = Cli::parse_from(["livebase"]);
        cli.config.data_dir = data_dir;
        cli.config.schema_dir = schema_dir;
        cli.config
    }

    /// The database URL in force: the flag, or a SQLite file inside the data dir.
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("livebase.db").display()),
        }
    }
}
