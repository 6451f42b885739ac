//! The `shoal` command: parses the CLI, starts tracing, loads config and runs a subcommand.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A Kinesis consumer host that runs record processors as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, about)]
struct Cli {
    /// Log lines as `text` (default) or `json` (one object per line, with the spans:
    /// worker, stream, shard, plugin generation). `RUST_LOG` filters them.
    #[arg(long, value_enum, global = true, default_value = "text")]
    log_format: shoal::telemetry::logs::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Consume a stream: shard sync, leases, one sandboxed processor instance per shard.
    /// SIGTERM or Ctrl-C finishes in-flight batches, checkpoints and releases the leases.
    Run {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// Serve /metrics, /healthz and /readyz on this address (e.g. 127.0.0.1:9464),
        /// overriding `[metrics] address`.
        #[arg(long, value_name = "ADDR")]
        metrics: Option<std::net::SocketAddr>,
    },
    /// Check a deployment without consuming: the config, the plugin against the world and
    /// its grants, the stream (a listing) and the lease store (there, or to be created).
    /// Exit status 1 if anything would keep `shoal run` from working.
    Check {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Start a processor project in a new directory NAME: the processor, shoal's WIT, a
    /// one-command build (`bash build.sh`) and a config that runs it on local files.
    New {
        /// The language.
        #[arg(long, value_enum)]
        lang: shoal::ops::new::Lang,
        /// The project's name (and directory): lowercase letters, digits, '-', '_'.
        name: String,
        /// Where to create it (default: the current directory).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Show the lease table: one row per shard (owner, checkpoint, counter, parents,
    /// state, how recently its counter moved), as a table or JSON, once or refreshed.
    Leases(shoal::ops::leases::LeasesOptions),
    /// Run a plugin over records from a JSON-lines file, offline, printing each batch's
    /// outcome and timing (same sandbox, limits, traps and directives as the consumer).
    Replay(shoal::replay::ReplayOptions),
    /// Work with plugin files.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Compile and validate a component against the shoal:processor world, and say what
    /// is wrong if it does not fit.
    Check {
        /// The component (.wasm).
        path: PathBuf,
    },
    /// List a component's imports and exports and explain, in plain words, whatever keeps
    /// it from fitting the shoal:processor world (missing export, other version, extra
    /// imports such as wasi:http). Exit status 1 if it does not fit.
    Inspect {
        /// The component (.wasm).
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    shoal::telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shoal: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            shoal::telemetry::flush(LOG_FLUSH_AT_EXIT);
            eprintln!("shoal: {}", plain_chain(&e));
            ExitCode::FAILURE
        }
    };
    shoal::telemetry::flush(LOG_FLUSH_AT_EXIT);
    code
}

/// How long an exiting process waits for its last log lines to reach stderr.
const LOG_FLUSH_AT_EXIT: std::time::Duration = std::time::Duration::from_secs(2);

/// An error and its causes in one line, each cause said once (many errors already quote
/// their cause, which `{:#}` would print a second time).
fn plain_chain(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, metrics } => {
            let mut settings = shoal::config::load(&config)?;
            if metrics.is_some() {
                settings.metrics_address = metrics;
            }
            let shutdown = tokio_util::sync::CancellationToken::new();
            tokio::spawn(forward_signals(shutdown.clone()));
            shoal::consumer::run(settings, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { config } => {
            let findings = shoal::ops::check::check(&config).await;
            for finding in &findings {
                println!("{finding}");
            }
            Ok(if findings.iter().all(|f| f.result.is_ok()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::New { lang, name, dir } => {
            let root = shoal::ops::new::create(lang, &name, &dir)?;
            println!(
                "created {}: build it with `bash {}/build.sh`, run it with `shoal run --config {}/shoal.toml`",
                root.display(),
                root.display(),
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Leases(options) => {
            let mut stdout = std::io::stdout();
            shoal::ops::leases::run(&options, &mut stdout).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(options) => {
            let mut stdout = std::io::stdout();
            let summary = shoal::replay::run(&options, &mut stdout).await?;
            Ok(if summary.bad_lines > 0 {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Plugin {
            command: PluginCommand::Inspect { path },
        } => {
            let engine = inspection_engine()?;
            let inspected =
                tokio::task::spawn_blocking(move || engine.inspect_file(&path).map(|i| (path, i)))
                    .await?;
            match inspected {
                Ok((path, inspection)) => {
                    print!("{}", render_inspection(&path, &inspection));
                    Ok(if inspection.problems.is_empty() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    })
                }
                Err(e) => {
                    eprintln!("rejected: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Plugin {
            command: PluginCommand::Check { path },
        } => {
            let engine = inspection_engine()?;
            let checked = tokio::task::spawn_blocking(move || engine.load_file(&path, 1)).await?;
            match checked {
                Ok(plugin) => {
                    println!(
                        "ok: {} implements shoal:processor@0.1.0 ({} bytes, sha256 {}, loaded in {:.1} ms)",
                        plugin.path().display(),
                        plugin.size_bytes(),
                        plugin.digest(),
                        plugin.load_time().as_secs_f64() * 1e3
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("rejected: {e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
    }
}

/// An engine for one-off checks: no pool, the usual cache.
fn inspection_engine() -> anyhow::Result<shoal::plugin::PluginEngine> {
    shoal::plugin::PluginEngine::new(&shoal::config::EngineSettings {
        pooling: false,
        ..Default::default()
    })
}

fn render_inspection(
    path: &std::path::Path,
    inspection: &shoal::plugin::inspect::Inspection,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} against {}",
        path.display(),
        shoal::plugin::inspect::WORLD
    );
    for (title, items) in [
        ("imports", &inspection.imports),
        ("exports", &inspection.exports),
    ] {
        let _ = writeln!(out, "{title}:");
        if items.is_empty() {
            let _ = writeln!(out, "  (none)");
        }
        for item in items {
            let mark = if item.problem { "✗" } else { "✓" };
            let _ = writeln!(out, "  {mark} {} ({}): {}", item.name, item.kind, item.note);
        }
    }
    if inspection.problems.is_empty() {
        let _ = writeln!(out, "fits: shoal can run it");
    } else {
        let _ = writeln!(out, "does not fit:");
        for problem in &inspection.problems {
            let _ = writeln!(out, "  - {problem}");
        }
    }
    out
}

/// The first SIGTERM/SIGINT starts a graceful shutdown; a second one exits at once.
async fn forward_signals(shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        eprintln!("shoal: cannot listen for SIGTERM/SIGINT; stop with SIGKILL");
        return;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: shutting down gracefully (send it again to exit at once)");
    shutdown.cancel();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    eprintln!("shoal: second signal, exiting without waiting");
    std::process::exit(130);
}
