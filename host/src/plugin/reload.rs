//! Hot swap: watches the plugin file, compiles and validates each new version off the hot
//! path, and publishes it as the next generation. A file that fails to load is rejected
//! with the reason and the current generation keeps running.
//!
//! The parent directory is watched (not the file), so both an editor's write-to-temp +
//! rename and a `cp` over the file are seen. Events are debounced: the reload starts once
//! the file has been quiet for the debounce period, so a half-written file is not loaded
//! (and if one is, it fails validation, is rejected, and the next event retries). A file
//! whose content hash equals the running generation's is ignored unless the reload was
//! forced (SIGHUP, or `ReloadHandle::reload_now(true)`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::engine::PluginEngine;
use super::plugin::Plugin;

/// The latest reload attempt, for operators and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadStatus {
    /// Reload attempts so far (accepted, rejected or unchanged).
    pub attempts: u64,
    /// The generation now published.
    pub generation: u64,
    /// Why the last rejected file was rejected (cleared when a reload succeeds).
    pub last_error: Option<String>,
    /// Rejected files so far.
    pub rejected: u64,
}

/// Receivers for the published plugin and the reload status.
#[derive(Debug, Clone)]
pub struct PluginUpdates {
    /// The current generation; workers switch at their next batch boundary.
    pub plugin: watch::Receiver<Arc<Plugin>>,
    /// The outcome of the latest reload attempt.
    pub status: watch::Receiver<ReloadStatus>,
}

/// Asks the reloader to reload now.
#[derive(Debug, Clone)]
pub struct ReloadHandle {
    tx: mpsc::UnboundedSender<bool>,
}

impl ReloadHandle {
    /// Reload now; `force` reloads even when the file is unchanged.
    pub fn reload_now(&self, force: bool) {
        let _ = self.tx.send(force);
    }
}

/// Options for the reloader.
#[derive(Debug, Clone)]
pub struct ReloadOptions {
    /// Quiet period before reloading after a file event.
    pub debounce: Duration,
    /// Watch the file (otherwise only explicit reloads and SIGHUP).
    pub watch_file: bool,
    /// Reload (forced) on SIGHUP.
    pub on_sighup: bool,
}

/// Publish `initial` and keep the published plugin up to date until `cancel` fires.
pub fn spawn_reloader(
    engine: PluginEngine,
    initial: Arc<Plugin>,
    options: ReloadOptions,
    cancel: CancellationToken,
) -> anyhow::Result<(PluginUpdates, ReloadHandle, tokio::task::JoinHandle<()>)> {
    let path = initial.path().to_path_buf();
    let (plugin_tx, plugin_rx) = watch::channel(Arc::clone(&initial));
    let (status_tx, status_rx) = watch::channel(ReloadStatus {
        generation: initial.generation(),
        ..ReloadStatus::default()
    });
    let (trigger_tx, trigger_rx) = mpsc::unbounded_channel();
    let (event_tx, event_rx) = mpsc::unbounded_channel();

    let watcher = if options.watch_file {
        Some(watch_parent(&path, event_tx)?)
    } else {
        None
    };
    let sighup = if options.on_sighup {
        Some(
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
                .map_err(|e| anyhow::anyhow!("cannot listen for SIGHUP: {e}"))?,
        )
    } else {
        None
    };
    let reloader = Reloader {
        engine,
        path,
        plugin_tx,
        status_tx,
        debounce: options.debounce,
    };
    let task = tokio::spawn(reloader.run(watcher, event_rx, trigger_rx, sighup, cancel));
    Ok((
        PluginUpdates {
            plugin: plugin_rx,
            status: status_rx,
        },
        ReloadHandle { tx: trigger_tx },
        task,
    ))
}

fn watch_parent(
    path: &Path,
    events: mpsc::UnboundedSender<()>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            Ok(event) => {
                let ours = event
                    .paths
                    .iter()
                    .any(|p| p.file_name().map(|n| n.to_os_string()) == name);
                let relevant = !matches!(event.kind, notify::EventKind::Access(_));
                if ours && relevant {
                    let _ = events.send(());
                }
            }
            Err(e) => tracing::warn!("plugin file watcher error: {e}"),
        })
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| anyhow::anyhow!("cannot watch {}: {e}", dir.display()))?;
    Ok(watcher)
}

struct Reloader {
    engine: PluginEngine,
    path: PathBuf,
    plugin_tx: watch::Sender<Arc<Plugin>>,
    status_tx: watch::Sender<ReloadStatus>,
    debounce: Duration,
}

impl Reloader {
    async fn run(
        self,
        _watcher: Option<notify::RecommendedWatcher>,
        mut events: mpsc::UnboundedReceiver<()>,
        mut triggers: mpsc::UnboundedReceiver<bool>,
        mut sighup: Option<tokio::signal::unix::Signal>,
        cancel: CancellationToken,
    ) {
        let mut due: Option<tokio::time::Instant> = None;
        loop {
            let sleep_until =
                due.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                _ = cancel.cancelled() => break,
                Some(()) = events.recv() => {
                    due = Some(tokio::time::Instant::now() + self.debounce);
                }
                Some(force) = triggers.recv() => self.reload(force).await,
                Some(()) = async { match sighup.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                    tracing::info!(plugin = %self.path.display(), "SIGHUP: reloading the plugin");
                    self.reload(true).await;
                }
                _ = tokio::time::sleep_until(sleep_until), if due.is_some() => {
                    due = None;
                    self.reload(false).await;
                }
            }
        }
    }

    async fn reload(&self, force: bool) {
        let current = Arc::clone(&self.plugin_tx.borrow());
        let next_generation = current.generation() + 1;
        let engine = self.engine.clone();
        let path = self.path.clone();
        let loaded =
            tokio::task::spawn_blocking(move || engine.load_file(&path, next_generation)).await;
        let mut status = self.status_tx.borrow().clone();
        status.attempts += 1;
        match loaded {
            Ok(Ok(plugin)) if !force && plugin.digest() == current.digest() => {
                tracing::debug!(plugin = %self.path.display(), generation = current.generation(), "plugin file unchanged; keeping the running generation");
            }
            Ok(Ok(plugin)) => {
                tracing::info!(
                    plugin = %self.path.display(),
                    old_generation = current.generation(),
                    new_generation = plugin.generation(),
                    digest = plugin.short_digest(),
                    load_ms = plugin.load_time().as_secs_f64() * 1e3,
                    "plugin reloaded: generation {} → {}; shards switch at their next batch boundary",
                    current.generation(),
                    plugin.generation()
                );
                status.generation = plugin.generation();
                status.last_error = None;
                reloaded("accepted", plugin.generation());
                self.plugin_tx.send_replace(Arc::new(plugin));
            }
            Ok(Err(e)) => {
                tracing::error!(
                    plugin = %self.path.display(),
                    generation = current.generation(),
                    "plugin rejected, generation {} keeps running: {e}",
                    current.generation()
                );
                status.rejected += 1;
                status.last_error = Some(e.to_string());
                reloaded("rejected", current.generation());
            }
            Err(join) => {
                tracing::error!(plugin = %self.path.display(), "plugin reload task failed: {join}");
                status.rejected += 1;
                status.last_error = Some(format!("reload task failed: {join}"));
                reloaded("rejected", current.generation());
            }
        }
        self.status_tx.send_replace(status);
    }
}

/// Count a reload by `outcome` and publish the generation in use.
fn reloaded(outcome: &'static str, generation: u64) {
    let m = crate::telemetry::metrics::metrics();
    m.plugin_reloads
        .get_or_create(&crate::telemetry::metrics::OutcomeLabel { outcome })
        .inc();
    m.plugin_generation
        .set(i64::try_from(generation).unwrap_or(i64::MAX));
}
