use anyhow::Context;
use clap::Parser;
use livebase::config::{ActionsCommand, AdminCommand, Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() {
    return_large_allocations_to_the_os();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
        .block_on(start());
}

/// glibc raises its mmap threshold each time a large block is freed, up to 32 MiB, after
/// which argon2's 19 MiB blocks come from per-thread heaps and stay resident after
/// use, so memory grows with every burst of sign-ups. A fixed
/// threshold keeps every allocation of 1 MiB or more in its own mapping, given back
/// when freed.
fn return_large_allocations_to_the_os() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1024 * 1024);
    }
}

async fn start() {
    // Start-up errors (a bad schema file, an unreachable database) are for a person to
    // act on: print the message, not a backtrace.
    if let Err(e) = run().await {
        eprintln!("livebase: {e:#}");
        std::process::exit(1);
    }
}

async fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Actions { command }) = &cli.command {
        return match command {
            ActionsCommand::Push(args) => livebase::actions::push::push(args).await,
            ActionsCommand::Versions(args) => livebase::actions::history::versions(args).await,
            ActionsCommand::Rollback(args) => livebase::actions::history::rollback(args).await,
        };
    }
    if let Some(Command::Admin {
        command: AdminCommand::ResetPassword(args),
    }) = &cli.command
    {
        let given = args.password.is_some();
        let password = livebase::users::reset_password_offline(
            &cli.config,
            &args.email,
            args.password.clone(),
        )
        .await?;
        let shown = if given {
            String::new()
        } else {
            format!(" to: {password}")
        };
        println!(
            "password of {} set{shown}; every earlier session of that user has ended",
            args.email
        );
        return Ok(());
    }
    let config = cli.config;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match config.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        // Colours only on a terminal: a log piped to a file or a collector stays plain.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
    }
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (--listen)", config.listen))?;
    let addr = listener.local_addr()?;
    let app = livebase::server::build(config, Vec::new()).await?;
    println!("livebase listening on {}://{addr}", app.scheme());
    livebase::server::serve(listener, app, shutdown_signal()).await
}

/// Ctrl-C or SIGTERM: stop accepting, finish in-flight requests, close the database.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
