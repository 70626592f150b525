//! `akstore serve`: listen, open the database, serve until a shutdown signal, then drain.
//!
//! The listener is bound before the database opens, so `/healthz` answers and `/readyz` reports
//! "starting" while a large file is recovered. On the first SIGTERM or Ctrl-C the server stops
//! accepting connections, lets in-flight requests finish within the grace period, closes the
//! store (every queued write commits and is answered, later writes get a 503 that says nothing
//! was applied) and exits 0. A second signal exits at once with status 128 + the signal number;
//! acknowledged writes are on disk either way.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use akstore_api::server::{DEFAULT_MAX_CONNECTIONS, Server};
use akstore_api::{ApiConfig, BearerToken, DEFAULT_PAGE_SIZE, MAX_BODY_BYTES, Metrics, Profile};
use akstore_store::{OpenOptions, Store};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};

/// Time the remaining connections get to send the answers of the writes that closing the store
/// completed, after the grace period expired.
const FLUSH_AFTER_CLOSE: Duration = Duration::from_secs(2);

/// Time blocking tasks (reads already running) get when the runtime stops, so one stuck read
/// cannot hold up the exit.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Args)]
pub struct ServeArgs {
    /// Database file; created with the current schema when it does not exist, and migrated
    /// to it when its schema is older.
    #[arg(long, env = "AKSTORE_DATA", default_value = "akstore.redb")]
    data: PathBuf,

    /// Reject a database of an older schema instead of migrating it on open; `akstore migrate`
    /// migrates it separately.
    #[arg(long, env = "AKSTORE_NO_MIGRATE", action = ArgAction::SetTrue,
          value_parser = BoolishValueParser::new())]
    no_migrate: bool,

    /// IP address and port to listen on, as `IP:PORT` (`[IPv6]:PORT` for IPv6). Non-loopback
    /// addresses expose the API to the network.
    #[arg(long, env = "AKSTORE_LISTEN", default_value = "127.0.0.1:8080",
          value_parser = parse_listen_address)]
    listen: SocketAddr,

    /// Status codes where the AKS documentation and the live service differ: `documented`
    /// answers DELETE of an existing resource with 200, `arm` with 202 as the SDKs expect.
    #[arg(long, env = "AKSTORE_PROFILE", value_enum, default_value_t = ProfileArg::Documented)]
    profile: ProfileArg,

    /// How long each write runs as an emulated long-running operation, as a duration such as
    /// `2s` or `500ms`; `arm` profile only. With 0 every write finishes at once.
    #[arg(long, env = "AKSTORE_PROVISIONING_DELAY", default_value = "0s",
          value_parser = humantime::parse_duration)]
    provisioning_delay: Duration,

    /// Maximum number of items in one list page; clients follow nextLink for the rest.
    #[arg(long, env = "AKSTORE_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,

    /// File holding the bearer token that every ARM request must send as
    /// `Authorization: Bearer <token>`; surrounding whitespace is ignored. Without it, any
    /// request is accepted. The probes and /metrics never need the token.
    #[arg(long, env = "AKSTORE_AUTH_TOKEN_FILE", value_name = "FILE")]
    auth_token_file: Option<PathBuf>,

    /// Time a request may take to send its body or to be read, as a duration such as `30s`
    /// or `2m`; past it the client gets 408 and nothing changes. A write already handed to
    /// the store is always answered with its outcome.
    #[arg(long, env = "AKSTORE_REQUEST_TIMEOUT", default_value = "30s",
          value_parser = parse_positive_duration)]
    request_timeout: Duration,

    /// Most client connections open at once (count); a connection beyond it gets 503
    /// TooManyConnections.
    #[arg(long, env = "AKSTORE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS as u32,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    max_connections: u32,

    /// Time in-flight requests get to finish after SIGTERM or Ctrl-C, as a duration such as
    /// `15s`. The default stays below the 30 s that Kubernetes waits before it kills a pod.
    #[arg(long, env = "AKSTORE_SHUTDOWN_GRACE", default_value = "15s",
          value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

#[derive(Clone, Copy, ValueEnum)]
enum ProfileArg {
    Documented,
    Arm,
}

/// Runs the server to completion.
pub fn run(args: ServeArgs) -> Result<(), String> {
    if matches!(args.profile, ProfileArg::Documented) && !args.provisioning_delay.is_zero() {
        return Err(
            "--provisioning-delay emulates long-running operations, which only the arm \
             profile has; add --profile arm, or set the delay to 0"
                .into(),
        );
    }
    let auth_token = args
        .auth_token_file
        .as_deref()
        .map(read_token_file)
        .transpose()?;
    if is_exposed(args.listen, auth_token.is_some()) {
        tracing::warn!(
            addr = %args.listen,
            "listening on a non-loopback address without --auth-token-file: anyone who can \
             reach this address can read and change every record"
        );
    }
    let config = ApiConfig {
        profile: match args.profile {
            ProfileArg::Documented => Profile::Documented,
            ProfileArg::Arm => Profile::Arm,
        },
        provisioning_delay: args.provisioning_delay,
        page_size: args.page_size as usize,
        max_body_bytes: MAX_BODY_BYTES,
        request_timeout: args.request_timeout,
        auth_token,
        metrics: Some(Metrics::install()?),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("failed to start the async runtime: {error}"))?;
    let served = runtime.block_on(serve(&args, config));
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT);
    if served.is_ok() {
        tracing::info!("stopped");
    }
    served
}

async fn serve(args: &ServeArgs, config: ApiConfig) -> Result<(), String> {
    let mut signals = Signals::install()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|error| format!("failed to listen on {}: {error}", args.listen))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("failed to read the listening address: {error}"))?;
    tracing::info!(
        addr = %address,
        data = %args.data.display(),
        profile = ?config.profile,
        provisioning_delay = %humantime::format_duration(config.provisioning_delay),
        auth = config.auth_token.is_some(),
        max_connections = args.max_connections,
        request_timeout = %humantime::format_duration(args.request_timeout),
        "listening"
    );

    let (app, lifecycle) = akstore_api::app(config);
    let server = Server::new(listener, app, args.max_connections as usize);
    let connections = server.connections();
    let (stop_accepting, accepting_stopped) = tokio::sync::oneshot::channel::<()>();
    let accepting = tokio::spawn(server.run(async {
        let _ = accepting_stopped.await;
    }));

    // Open (and if needed recover) the database while the probes already answer.
    let data = args.data.clone();
    let options = OpenOptions {
        migrate: !args.no_migrate,
    };
    let mut opening = tokio::task::spawn_blocking(move || Store::open_with(&data, options));
    let mut store = None;
    let mut settler = None;
    let first_signal = tokio::select! {
        opened = &mut opening => {
            let opened = opened
                .map_err(|error| crate::damaged_file_message(&args.data, &error.to_string()))?
                .map_err(|error| error.to_string())?;
            let opened = Arc::new(opened);
            // Settles operations left by an earlier run too, whatever the configuration now.
            settler = Some(akstore_api::spawn_settler(Arc::clone(&opened)));
            lifecycle.open(Arc::clone(&opened));
            store = Some(opened);
            tracing::info!("database open; serving the API");
            signals.next().await
        }
        signal = signals.next() => signal,
    };

    tracing::info!(
        signal = first_signal.name(),
        grace = %humantime::format_duration(args.shutdown_grace),
        "shutting down: no new connections, finishing in-flight requests"
    );
    lifecycle.begin_shutdown();
    tokio::spawn(exit_on_second_signal(signals));
    let _ = stop_accepting.send(());
    let _ = accepting.await;

    let drained = connections.wait_closed(args.shutdown_grace).await;
    if !drained {
        tracing::warn!(
            open = connections.open(),
            "shutdown grace period expired; closing the store, then the remaining connections"
        );
    }
    if let Some(settler) = settler {
        settler.abort();
    }
    if store.is_none() {
        store = finish_opening(opening, args.shutdown_grace).await;
    }
    if let Some(store) = store {
        // Every write already queued commits and is answered before the writer stops.
        let closing = tokio::task::spawn_blocking(move || store.close());
        if let Err(error) = closing.await {
            tracing::error!(%error, "closing the store failed");
        }
    }
    if !drained {
        connections.wait_closed(FLUSH_AFTER_CLOSE).await;
    }
    Ok(())
}

/// Waits up to `limit` for a database that was still opening when shutdown began, so that its
/// recovery is not cut short when it is about to finish.
async fn finish_opening(
    opening: tokio::task::JoinHandle<Result<Store, akstore_store::OpenError>>,
    limit: Duration,
) -> Option<Arc<Store>> {
    match tokio::time::timeout(limit, opening).await {
        Ok(Ok(Ok(store))) => Some(Arc::new(store)),
        Ok(Ok(Err(error))) => {
            tracing::error!(%error, "the database failed to open during shutdown");
            None
        }
        Ok(Err(error)) => {
            tracing::error!(%error, "opening the database failed during shutdown");
            None
        }
        Err(_) => {
            tracing::warn!("the database is still opening; exiting without waiting for it");
            None
        }
    }
}

async fn exit_on_second_signal(mut signals: Signals) {
    let signal = signals.next().await;
    tracing::warn!(
        signal = signal.name(),
        "second signal received, exiting at once; acknowledged writes are on disk"
    );
    std::process::exit(signal.exit_code());
}

/// Whether the API is open to the network without authentication: a non-loopback address and
/// no token. Note that `0.0.0.0` and `::` listen on every interface.
fn is_exposed(listen: SocketAddr, authenticated: bool) -> bool {
    !authenticated && !listen.ip().is_loopback()
}

/// Reads the bearer token, warning when other users can read the file.
fn read_token_file(path: &Path) -> Result<BearerToken, String> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        format!(
            "failed to read the auth token file {}: {error}",
            path.display()
        )
    })?;
    let token = BearerToken::parse(&text)
        .map_err(|error| format!("the auth token file {} is invalid: {error}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path)
            && metadata.permissions().mode() & 0o004 != 0
        {
            tracing::warn!(
                path = %path.display(),
                "the auth token file is readable by every user; restrict it with chmod 600"
            );
        }
    }
    Ok(token)
}

fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration.is_zero() {
        return Err("the duration must be greater than zero".into());
    }
    Ok(duration)
}

/// The shutdown signals: SIGTERM and SIGINT (Ctrl-C).
struct Signals {
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
}

#[derive(Clone, Copy)]
enum ShutdownSignal {
    Terminate,
    Interrupt,
}

impl Signals {
    fn install() -> Result<Signals, String> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let listen = |kind: SignalKind, name: &str| {
                signal(kind).map_err(|error| format!("failed to listen for {name}: {error}"))
            };
            Ok(Signals {
                terminate: listen(SignalKind::terminate(), "SIGTERM")?,
                interrupt: listen(SignalKind::interrupt(), "SIGINT")?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    /// Waits for the next signal. A stream that has closed never resolves.
    async fn next(&mut self) -> ShutdownSignal {
        #[cfg(unix)]
        {
            tokio::select! {
                Some(()) = self.terminate.recv() => ShutdownSignal::Terminate,
                Some(()) = self.interrupt.recv() => ShutdownSignal::Interrupt,
                else => std::future::pending().await,
            }
        }
        #[cfg(not(unix))]
        {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
            ShutdownSignal::Interrupt
        }
    }
}

impl ShutdownSignal {
    fn name(self) -> &'static str {
        match self {
            ShutdownSignal::Terminate => "SIGTERM",
            ShutdownSignal::Interrupt => "SIGINT",
        }
    }

    /// The shell convention for a process ended by a signal: 128 + its number.
    fn exit_code(self) -> i32 {
        match self {
            ShutdownSignal::Terminate => 128 + 15,
            ShutdownSignal::Interrupt => 128 + 2,
        }
    }
}

/// Parses `--listen`, naming the expected form when the value is a host name or lacks a port.
fn parse_listen_address(value: &str) -> Result<SocketAddr, String> {
    value.parse().map_err(|_| {
        format!(
            "'{value}' is not an IP address and port; use a form like 127.0.0.1:8080 or \
             [::1]:8080 (host names such as localhost are not resolved)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposure_needs_a_non_loopback_address_without_token() {
        let address = |text: &str| text.parse::<SocketAddr>().unwrap();
        assert!(is_exposed(address("0.0.0.0:8080"), false));
        assert!(is_exposed(address("[::]:8080"), false));
        assert!(is_exposed(address("192.0.2.10:8080"), false));
        assert!(!is_exposed(address("0.0.0.0:8080"), true));
        assert!(!is_exposed(address("127.0.0.1:8080"), false));
        assert!(!is_exposed(address("127.0.0.2:8080"), false));
        assert!(!is_exposed(address("[::1]:8080"), false));
    }

    #[test]
    fn durations_must_be_positive() {
        assert_eq!(parse_positive_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("30").is_err());
    }
}
