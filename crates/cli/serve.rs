//! `akstore serve`: open the database, bind the listener, serve until a shutdown signal, then
//! let in-flight requests finish and close the store.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use akstore_api::{ApiConfig, DEFAULT_PAGE_SIZE, MAX_BODY_BYTES, Profile};
use akstore_store::{OpenOptions, Store};
use clap::builder::BoolishValueParser;
use clap::{ArgAction, Args, ValueEnum};

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

    /// Address and port to listen on. Non-loopback addresses expose the API to the network.
    #[arg(long, env = "AKSTORE_LISTEN", default_value = "127.0.0.1:8080")]
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

    /// Most items in one list page (count); clients follow nextLink for the rest.
    #[arg(long, env = "AKSTORE_PAGE_SIZE", default_value_t = DEFAULT_PAGE_SIZE as u32,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    page_size: u32,
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
    let options = OpenOptions {
        migrate: !args.no_migrate,
    };
    let store = Store::open_with(&args.data, options).map_err(|error| error.to_string())?;
    let store = Arc::new(store);
    let config = ApiConfig {
        profile: match args.profile {
            ProfileArg::Documented => Profile::Documented,
            ProfileArg::Arm => Profile::Arm,
        },
        provisioning_delay: args.provisioning_delay,
        page_size: args.page_size as usize,
        max_body_bytes: MAX_BODY_BYTES,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("failed to start the async runtime: {error}"))?;
    let served = runtime.block_on(serve(Arc::clone(&store), config, args.listen, &args.data));

    // In-flight requests have finished; wait for queued writes to commit, then close.
    store.close();
    drop(store);
    tracing::info!("stopped");
    served
}

async fn serve(
    store: Arc<Store>,
    config: ApiConfig,
    listen: SocketAddr,
    data: &std::path::Path,
) -> Result<(), String> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|error| format!("failed to listen on {listen}: {error}"))?;
    let address = listener
        .local_addr()
        .map_err(|error| format!("failed to read the listening address: {error}"))?;
    tracing::info!(
        addr = %address,
        data = %data.display(),
        profile = ?config.profile,
        provisioning_delay = %humantime::format_duration(config.provisioning_delay),
        "listening"
    );

    // Settles operations left by an earlier run too, whatever the configuration now.
    let settler = akstore_api::spawn_settler(Arc::clone(&store));
    let app = akstore_api::router(store, config);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|error| format!("server failed: {error}"));
    settler.abort();
    served
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "failed to listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "failed to listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}
