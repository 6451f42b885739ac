//! Loads the TOML config: parse into the file structs, then validate into `Settings`.
//! Every error names the file, the line and the key.

mod bytesize;
mod file;
pub mod interpolate;
mod settings;

use std::fmt;
use std::path::{Path, PathBuf};

pub use bytesize::parse_bytes;
pub use settings::*;

use file::{ConfigFile, PoisonFile};

use crate::egress::{self, EgressGrants};

/// A config problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The config file.
    pub file: PathBuf,
    /// 1-based line, if known.
    pub line: Option<usize>,
    /// Dotted key, e.g. `plugin.limits.memory`, if known.
    pub key: Option<String>,
    /// What is wrong and, where possible, what would be right.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "config error in {}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(key) = &self.key {
            write!(f, " at key `{key}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Read, parse and validate a config file.
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    parse(path, &read(path)?)
}

/// Read, parse and validate a config file without touching the file system otherwise
/// (`shoal check`).
pub fn check_file(path: &Path) -> Result<Settings, ConfigError> {
    check(path, &read(path)?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        line: None,
        key: None,
        message: format!("cannot read the file: {e}"),
    })
}

/// Parse and validate config text; `path` names it in errors and anchors relative paths.
/// Directories the config asks for (local stream, dead letters, sandbox dirs marked
/// `create`) are created.
pub fn parse(path: &Path, source: &str) -> Result<Settings, ConfigError> {
    validate(path, source, true)
}

/// Parse and validate config text without touching the file system (no directory is
/// created; for checks and fuzzing).
pub fn check(path: &Path, source: &str) -> Result<Settings, ConfigError> {
    validate(path, source, false)
}

fn validate(path: &Path, source: &str, create_dirs: bool) -> Result<Settings, ConfigError> {
    let mut file: ConfigFile = toml::from_str(source).map_err(|e| {
        let offset = e.span().map(|s| s.start);
        ConfigError {
            file: path.to_path_buf(),
            line: offset.map(|o| line_of(source, o)),
            key: offset.and_then(|o| key_at(source, o)),
            message: with_suggestion(e.message().trim()),
        }
    })?;
    let base = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let validator = Validator {
        path,
        source,
        base: &base,
        create_dirs,
    };
    validator.interpolate(&mut file)?;
    validator.settings(file)
}

/// serde's "unknown field `memroy`, expected `memory` or `deadline`", with "did you mean
/// `memory`?" when one expected name is close (a typo: at most a third of it differs).
fn with_suggestion(message: &str) -> String {
    let Some(rest) = message.strip_prefix("unknown field `") else {
        return message.to_string();
    };
    let Some((unknown, expected)) = rest.split_once('`') else {
        return message.to_string();
    };
    let closest = expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|name| (edit_distance(unknown, name), name))
        .min();
    match closest {
        Some((distance, name)) if distance <= (unknown.len().max(name.len()) / 3).max(1) => {
            format!("{message}; did you mean `{name}`?")
        }
        _ => message.to_string(),
    }
}

/// Levenshtein distance (small inputs: key names).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = previous[j] + usize::from(ca != *cb);
            current.push(substitute.min(previous[j + 1] + 1).min(current[j] + 1));
        }
        previous = current;
    }
    previous[b.len()]
}

struct Validator<'a> {
    path: &'a Path,
    source: &'a str,
    base: &'a Path,
    /// Create the directories the config names (off for side-effect-free checks).
    create_dirs: bool,
}

impl Validator<'_> {
    /// Expand `${VAR}` in the names and endpoints (see [`interpolate`]).
    fn interpolate(&self, file: &mut ConfigFile) -> Result<(), ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        let spanned = |value: &mut toml::Spanned<String>, key: &str| {
            let expanded = interpolate::expand(value.get_ref(), env)
                .map_err(|m| self.error(Some(value.span()), key, m))?;
            *value.get_mut() = expanded;
            Ok::<(), ConfigError>(())
        };
        let plain = |value: &mut Option<String>, section: &str, key: &str| {
            if let Some(text) = value {
                let full = format!("{section}.{key}");
                *text = interpolate::expand(text, env).map_err(|m| {
                    self.error(find_line_span_in(self.source, section, key), &full, m)
                })?;
            }
            Ok::<(), ConfigError>(())
        };
        if let Some(c) = &mut file.consumer {
            spanned(&mut c.application, "consumer.application")?;
            plain(&mut c.worker_id, "consumer", "worker_id")?;
            if let Some(name) = &mut c.consumer_name {
                spanned(name, "consumer.consumer_name")?;
            }
        }
        if let Some(s) = &mut file.source {
            if let Some(name) = &mut s.stream_name {
                spanned(name, "source.stream_name")?;
            }
            plain(&mut s.stream_arn, "source", "stream_arn")?;
            plain(&mut s.region, "source", "region")?;
            plain(&mut s.endpoint, "source", "endpoint")?;
        }
        if let Some(l) = &mut file.leases {
            plain(&mut l.table, "leases", "table")?;
            plain(&mut l.region, "leases", "region")?;
            plain(&mut l.endpoint, "leases", "endpoint")?;
        }
        if let Some(m) = &mut file.metrics {
            spanned(&mut m.address, "metrics.address")?;
        }
        Ok(())
    }

    /// Create `dir` (and its parents) unless this is a side-effect-free check.
    fn create_dir(
        &self,
        dir: &Path,
        span: Option<std::ops::Range<usize>>,
        key: &str,
    ) -> Result<(), ConfigError> {
        if !self.create_dirs {
            return Ok(());
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| self.error(span, key, format!("cannot create {}: {e}", dir.display())))
    }

    fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        key: &str,
        message: String,
    ) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            line: span.map(|s| line_of(self.source, s.start)),
            key: Some(key.to_string()),
            message,
        }
    }

    fn resolve(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    fn settings(&self, file: ConfigFile) -> Result<Settings, ConfigError> {
        let mut engine = EngineSettings::default();
        if let Some(n) = &file.engine.max_instances {
            if *n.get_ref() == 0 {
                return Err(self.error(
                    Some(n.span()),
                    "engine.max_instances",
                    "must be at least 1".into(),
                ));
            }
            engine.max_instances = *n.get_ref();
        }
        engine.pooling = file.engine.pooling.unwrap_or(true);
        engine.fuel_metering = file.engine.fuel_metering.unwrap_or(false);
        if let Some(dir) = &file.engine.cache_dir {
            engine.cache_dir = (!dir.get_ref().is_empty()).then(|| self.resolve(dir.get_ref()));
        }
        let plugin = match file.plugin {
            Some(p) => Some(self.plugin(p)?),
            None => None,
        };
        if let Some(p) = &plugin {
            engine.memory_bytes = p.limits.memory_bytes;
        }
        let consumer = match (file.consumer, file.source, file.leases) {
            (None, None, None) => None,
            (Some(c), Some(source), Some(leases)) => Some(self.consumer(c, source, leases)?),
            (c, source, leases) => {
                let missing: Vec<&str> = [
                    ("[consumer]", c.is_none()),
                    ("[source]", source.is_none()),
                    ("[leases]", leases.is_none()),
                ]
                .into_iter()
                .filter(|(_, m)| *m)
                .map(|(n, _)| n)
                .collect();
                return Err(ConfigError {
                    file: self.path.to_path_buf(),
                    line: None,
                    key: None,
                    message: format!(
                        "a consumer needs [consumer], [source] and [leases]; missing {}",
                        missing.join(", ")
                    ),
                });
            }
        };
        if let (Some(c), Some(p)) = (&consumer, &plugin) {
            self.shutdown_fits_a_batch(c, p)?;
        }
        let metrics_address = match file.metrics {
            Some(m) => Some(self.metrics_address(&m.address)?),
            None => None,
        };
        Ok(Settings {
            engine,
            plugin,
            consumer,
            metrics_address,
        })
    }

    /// `metrics.address`: `host:port`, with an IP address for the host.
    fn metrics_address(
        &self,
        address: &toml::Spanned<String>,
    ) -> Result<std::net::SocketAddr, ConfigError> {
        address.get_ref().parse().map_err(|e| {
            self.error(
                Some(address.span()),
                "metrics.address",
                format!(
                    "must be an IP address and port such as \"127.0.0.1:9464\" or \"0.0.0.0:9464\" ({e})"
                ),
            )
        })
    }

    /// A shutdown lets the batch in flight finish before it checkpoints and releases:
    /// `consumer.shutdown_timeout` must be longer than `plugin.limits.deadline`.
    fn shutdown_fits_a_batch(
        &self,
        consumer: &ConsumerSettings,
        plugin: &PluginSettings,
    ) -> Result<(), ConfigError> {
        let (timeout, deadline) = (consumer.shutdown_timeout, plugin.limits.deadline);
        if timeout > deadline {
            return Ok(());
        }
        // Point at whichever of the two the file sets (the timeout if both).
        let (key, span) = match find_line_span(self.source, "shutdown_timeout") {
            Some(span) => ("consumer.shutdown_timeout", Some(span)),
            None => (
                "plugin.limits.deadline",
                find_line_span(self.source, "deadline"),
            ),
        };
        Err(self.error(
            span,
            key,
            format!(
                "consumer.shutdown_timeout ({}) must be longer than plugin.limits.deadline ({}): a shutdown lets each shard's batch in flight finish, checkpoints it and releases the lease, and a shorter timeout interrupts that batch and leaves its records to be processed again",
                humantime::format_duration(timeout),
                humantime::format_duration(deadline)
            ),
        ))
    }

    fn consumer(
        &self,
        c: file::ConsumerFile,
        source: file::SourceFile,
        leases: file::LeasesFile,
    ) -> Result<ConsumerSettings, ConfigError> {
        let application = self.application(&c)?;
        let initial_position = self.initial_position(&c)?;
        let max_records = match &c.max_records {
            Some(n) if !(1..=10_000).contains(n.get_ref()) => {
                return Err(self.error(
                    Some(n.span()),
                    "consumer.max_records",
                    "must be 1 to 10000 (the GetRecords limit)".into(),
                ));
            }
            Some(n) => *n.get_ref() as usize,
            None => defaults::MAX_RECORDS,
        };
        let lease_duration = self.lease_duration(&c)?;
        let source_kind = source.kind.clone();
        let source = self.source_settings(source)?;
        let retrieval = self.retrieval(&c, &application, &source, &source_kind)?;
        let read_ahead_bytes = match &c.read_ahead_bytes {
            Some(value) => self.byte_size(value, "consumer.read_ahead_bytes")?,
            None => defaults::READ_AHEAD_BYTES,
        };
        let leases = self.lease_store_settings(leases, &application)?;
        let stable_batches = self.stable_batches(&c)?;
        Ok(ConsumerSettings {
            application,
            worker_id: c
                .worker_id
                .filter(|w| !w.trim().is_empty())
                .unwrap_or_else(default_worker_id),
            initial_position,
            max_records,
            idle_time_between_reads: c
                .idle_time_between_reads
                .unwrap_or(defaults::IDLE_TIME_BETWEEN_READS),
            lease_duration,
            max_leases_per_worker: c
                .max_leases_per_worker
                .map(|n| *n.get_ref() as usize)
                .filter(|n| *n > 0),
            shard_sync_interval: c
                .shard_sync_interval
                .unwrap_or(defaults::SHARD_SYNC_INTERVAL),
            checkpoint_interval: c.checkpoint_interval.unwrap_or_default(),
            deliver_empty_batches: c.deliver_empty_batches.unwrap_or(false),
            stable_batches,
            retrieval,
            read_ahead_records: c
                .read_ahead_records
                .map(|n| *n.get_ref() as usize)
                .unwrap_or(defaults::READ_AHEAD_RECORDS),
            read_ahead_bytes,
            shutdown_timeout: c.shutdown_timeout.unwrap_or(defaults::SHUTDOWN_TIMEOUT),
            source,
            leases,
        })
    }

    /// `consumer.stable_batches`: it writes the checkpoint with every batch's extent, so
    /// coalescing checkpoints (`consumer.checkpoint_interval`) cannot apply.
    fn stable_batches(&self, c: &file::ConsumerFile) -> Result<bool, ConfigError> {
        let Some(stable) = &c.stable_batches else {
            return Ok(false);
        };
        let interval = c.checkpoint_interval.unwrap_or_default();
        if *stable.get_ref() && !interval.is_zero() {
            return Err(self.error(
                Some(stable.span()),
                "consumer.stable_batches",
                format!(
                    "cannot be combined with consumer.checkpoint_interval ({}): stable batches write the checkpoint with each batch's extent, once per batch; remove checkpoint_interval",
                    humantime::format_duration(interval)
                ),
            ));
        }
        Ok(*stable.get_ref())
    }

    /// `consumer.retrieval` and `consumer.consumer_name`: enhanced fan-out needs a
    /// Kinesis source and a name Kinesis accepts.
    fn retrieval(
        &self,
        c: &file::ConsumerFile,
        application: &str,
        source: &SourceSettings,
        source_kind: &toml::Spanned<String>,
    ) -> Result<RetrievalSettings, ConfigError> {
        let (mode, span) = match &c.retrieval {
            Some(r) => (r.get_ref().as_str(), Some(r.span())),
            None => ("polling", None),
        };
        match mode {
            "polling" => Ok(RetrievalSettings::Polling),
            "fan-out" => {
                if !matches!(source, SourceSettings::Kinesis { .. }) {
                    return Err(self.error(
                        span,
                        "consumer.retrieval",
                        format!(
                            "\"fan-out\" (enhanced fan-out) needs a Kinesis source, and [source] kind is {:?}; use \"polling\"",
                            source_kind.get_ref()
                        ),
                    ));
                }
                let (name, name_span) = match &c.consumer_name {
                    Some(n) => (n.get_ref().trim().to_string(), Some(n.span())),
                    None => (application.to_string(), span),
                };
                if name.is_empty()
                    || name.len() > 128
                    || !name
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
                {
                    return Err(self.error(
                        name_span,
                        "consumer.consumer_name",
                        format!("{name:?} is not a Kinesis consumer name: 1 to 128 letters, digits, '-', '_' or '.'"),
                    ));
                }
                Ok(RetrievalSettings::FanOut {
                    consumer_name: name,
                })
            }
            other => Err(self.error(
                span,
                "consumer.retrieval",
                format!("{other:?} is not \"polling\" or \"fan-out\""),
            )),
        }
    }

    /// A size: a string such as "8MiB" or a number of bytes.
    fn byte_size(
        &self,
        value: &toml::Spanned<toml::Value>,
        key: &str,
    ) -> Result<usize, ConfigError> {
        match value.get_ref() {
            toml::Value::String(s) => parse_bytes(s),
            toml::Value::Integer(i) => {
                u64::try_from(*i).map_err(|_| "must not be negative".to_string())
            }
            _ => Err("must be a size such as \"8MiB\" or a number of bytes".to_string()),
        }
        .map(|bytes| usize::try_from(bytes).unwrap_or(usize::MAX))
        .map_err(|m| self.error(Some(value.span()), key, m))
    }

    /// `consumer.application`: it names the lease table, so it must be a safe name.
    fn application(&self, c: &file::ConsumerFile) -> Result<String, ConfigError> {
        let application = c.application.get_ref().trim().to_string();
        if application.is_empty()
            || !application
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch))
        {
            return Err(self.error(Some(c.application.span()), "consumer.application", "must be non-empty and use only letters, digits, '-', '_' and '.' (it names the lease table)".into()));
        }
        Ok(application)
    }

    /// `consumer.initial_position` (and `initial_timestamp` for `AT_TIMESTAMP`).
    fn initial_position(&self, c: &file::ConsumerFile) -> Result<InitialPosition, ConfigError> {
        let initial_position = match c
            .initial_position
            .as_ref()
            .map(|p| (p.get_ref().as_str(), p.span()))
        {
            None | Some(("TRIM_HORIZON", _)) => InitialPosition::TrimHorizon,
            Some(("LATEST", _)) => InitialPosition::Latest,
            Some(("AT_TIMESTAMP", span)) => {
                let Some(ts) = &c.initial_timestamp else {
                    return Err(self.error(Some(span), "consumer.initial_position", "AT_TIMESTAMP needs `initial_timestamp` (RFC 3339, e.g. 2026-11-23T10:00:00Z)".into()));
                };
                let time = humantime::parse_rfc3339_weak(ts.get_ref()).map_err(|e| {
                    self.error(
                        Some(ts.span()),
                        "consumer.initial_timestamp",
                        format!("not an RFC 3339 time: {e}"),
                    )
                })?;
                let ms = time
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0);
                InitialPosition::AtTimestamp(ms)
            }
            Some((other, span)) => {
                return Err(self.error(
                    Some(span),
                    "consumer.initial_position",
                    format!("{other:?} is not TRIM_HORIZON, LATEST or AT_TIMESTAMP"),
                ));
            }
        };
        Ok(initial_position)
    }

    /// `consumer.lease_duration`, and the other consumer durations that must not be 0.
    fn lease_duration(&self, c: &file::ConsumerFile) -> Result<std::time::Duration, ConfigError> {
        let lease_duration = c.lease_duration.unwrap_or(defaults::LEASE_DURATION);
        if lease_duration < std::time::Duration::from_secs(1) {
            return Err(self.error(
                find_line_span(self.source, "lease_duration"),
                "consumer.lease_duration",
                "must be at least 1s: a worker stops processing a fifth of the lease before it may expire, and that margin must cover interrupting a guest call and scheduling".into(),
            ));
        }
        for (key, value) in [
            ("shard_sync_interval", c.shard_sync_interval),
            ("shutdown_timeout", c.shutdown_timeout),
        ] {
            if value.is_some_and(|v| v.is_zero()) {
                return Err(self.error(
                    find_line_span(self.source, key),
                    &format!("consumer.{key}"),
                    "must be longer than 0s".into(),
                ));
            }
        }
        Ok(lease_duration)
    }

    /// `[source]`: Kinesis or a local directory.
    fn source_settings(&self, source: file::SourceFile) -> Result<SourceSettings, ConfigError> {
        let source = match source.kind.get_ref().as_str() {
            "kinesis" => {
                if source.stream_name.is_none() && source.stream_arn.is_none() {
                    return Err(self.error(
                        Some(source.kind.span()),
                        "source.stream_name",
                        "a kinesis source needs `stream_name` or `stream_arn`".into(),
                    ));
                }
                SourceSettings::Kinesis {
                    stream_name: source.stream_name.map(|s| s.into_inner()),
                    stream_arn: source.stream_arn,
                    region: source.region,
                    endpoint: source.endpoint,
                }
            }
            "local" => {
                let Some(dir) = &source.directory else {
                    return Err(self.error(
                        Some(source.kind.span()),
                        "source.directory",
                        "a local source needs `directory` (one <shard-id>.jsonl file per shard)"
                            .into(),
                    ));
                };
                let directory = self.resolve(dir.get_ref());
                self.create_dir(&directory, Some(dir.span()), "source.directory")?;
                SourceSettings::Local {
                    directory,
                    stream_name: source
                        .stream_name
                        .map(|s| s.into_inner())
                        .unwrap_or_else(|| "local".to_string()),
                }
            }
            other => {
                return Err(self.error(
                    Some(source.kind.span()),
                    "source.kind",
                    format!("{other:?} is not `kinesis` or `local`"),
                ));
            }
        };
        Ok(source)
    }

    /// `[leases]`: DynamoDB or SQLite.
    fn lease_store_settings(
        &self,
        leases: file::LeasesFile,
        application: &str,
    ) -> Result<LeaseStoreSettings, ConfigError> {
        let leases = match leases.kind.get_ref().as_str() {
            "dynamodb" => {
                let table = leases.table.unwrap_or_else(|| application.to_string());
                // DynamoDB's own rule for table names.
                let valid = (3..=255).contains(&table.len())
                    && table
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
                if !valid {
                    let (key, needle) = match find_line_span(self.source, "table") {
                        Some(span) => ("leases.table", Some(span)),
                        None => (
                            "consumer.application",
                            find_line_span(self.source, "application"),
                        ),
                    };
                    return Err(self.error(
                        needle,
                        key,
                        format!("{table:?} cannot name a DynamoDB lease table: it must be 3 to 255 letters, digits, '-', '_' or '.' (set `leases.table` to use another name than the application's)"),
                    ));
                }
                LeaseStoreSettings::DynamoDb {
                    table,
                    region: leases.region,
                    endpoint: leases.endpoint,
                }
            }
            "sqlite" => {
                let Some(path) = &leases.path else {
                    return Err(self.error(
                        Some(leases.kind.span()),
                        "leases.path",
                        "an sqlite lease store needs `path`".into(),
                    ));
                };
                LeaseStoreSettings::Sqlite {
                    path: self.resolve(path.get_ref()),
                }
            }
            other => {
                return Err(self.error(
                    Some(leases.kind.span()),
                    "leases.kind",
                    format!("{other:?} is not `dynamodb` or `sqlite`"),
                ));
            }
        };
        Ok(leases)
    }

    /// `plugin.sandbox.http`, `tcp` and `udp`: each entry parsed, errors at its line.
    fn egress(&self, sandbox: &file::SandboxFile) -> Result<EgressGrants, ConfigError> {
        let any = sandbox.allow_any_host.unwrap_or(false);
        let mut grants = EgressGrants {
            resolve_names_for_ranges: sandbox.resolve_names_for_ranges.unwrap_or(false),
            ..EgressGrants::default()
        };
        for entry in &sandbox.http {
            grants.http.push(
                egress::parse_http(entry.get_ref(), any)
                    .map_err(|e| self.error(Some(entry.span()), "plugin.sandbox.http", e))?,
            );
        }

        for (key, entries, into) in [
            ("plugin.sandbox.tcp", &sandbox.tcp, &mut grants.tcp),
            ("plugin.sandbox.udp", &sandbox.udp, &mut grants.udp),
        ] {
            for entry in entries {
                into.push(
                    egress::parse_socket(entry.get_ref(), any)
                        .map_err(|e| self.error(Some(entry.span()), key, e))?,
                );
            }
        }
        Ok(grants)
    }

    fn plugin(&self, p: file::PluginFile) -> Result<PluginSettings, ConfigError> {
        if p.path.get_ref().trim().is_empty() {
            return Err(self.error(
                Some(p.path.span()),
                "plugin.path",
                "must name a .wasm component".into(),
            ));
        }
        let mut settings = PluginSettings::for_path(self.resolve(p.path.get_ref()));
        settings.watch = p.watch.unwrap_or(true);
        if let Some(d) = p.reload_debounce {
            settings.reload_debounce = d;
        }
        settings.guest_settings = self.guest_settings(p.settings)?;
        self.sandbox_into(&p.sandbox, &mut settings.sandbox)?;
        self.limits_into(&p.limits, &mut settings.limits)?;
        self.failure_into(p.failure, &mut settings.failure)?;
        Ok(settings)
    }

    /// `[plugin.settings]`: every value as the text the guest receives.
    fn guest_settings(
        &self,
        values: std::collections::BTreeMap<String, toml::Value>,
    ) -> Result<Vec<(String, String)>, ConfigError> {
        let mut out = Vec::with_capacity(values.len());
        for (key, value) in values {
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Datetime(d) => d.to_string(),
                toml::Value::Array(_) | toml::Value::Table(_) => {
                    let line = find_line(self.source, &key);
                    return Err(ConfigError {
                        file: self.path.to_path_buf(),
                        line,
                        key: Some(format!("plugin.settings.{key}")),
                        message: "must be a string, number or boolean (the guest receives text)"
                            .into(),
                    });
                }
            };
            out.push((key, text));
        }
        Ok(out)
    }

    /// `[plugin.sandbox]`: outbound grants, environment variables, directories.
    fn sandbox_into(
        &self,
        p: &file::SandboxFile,
        sandbox: &mut SandboxSettings,
    ) -> Result<(), ConfigError> {
        sandbox.egress = self.egress(p)?;
        for name in &p.env_inherit {
            match std::env::var(name) {
                Ok(value) => sandbox.env.push((name.clone(), value)),
                Err(_) => tracing::warn!(
                    config = %self.path.display(),
                    "plugin.sandbox.env_inherit names {name}, which is not set in shoal's environment; the guest will not see it"
                ),
            }
        }
        sandbox
            .env
            .extend(p.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        for dir in &p.dirs {
            let span = dir.span();
            let dir = dir.get_ref();
            let host = self.resolve(&dir.host);
            if dir.create {
                self.create_dir(&host, Some(span.clone()), "plugin.sandbox.dirs.host")?;
            }
            if !host.is_dir() && (self.create_dirs || !dir.create) {
                return Err(self.error(
                    Some(span),
                    "plugin.sandbox.dirs.host",
                    format!(
                        "{} is not a directory (set `create = true` to create it)",
                        host.display()
                    ),
                ));
            }
            let guest = dir.guest.clone().unwrap_or_else(|| {
                format!(
                    "/{}",
                    host.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                )
            });
            sandbox.dirs.push(DirGrant {
                host,
                guest,
                mode: dir.mode,
            });
        }
        Ok(())
    }

    /// `[plugin.limits]`: memory (1 MiB to 4 GiB) and the per-call deadline (above 0s).
    fn limits_into(
        &self,
        p: &file::LimitsFile,
        limits: &mut LimitSettings,
    ) -> Result<(), ConfigError> {
        if let Some(memory) = &p.memory {
            let bytes = self.byte_size(memory, "plugin.limits.memory")? as u64;
            if bytes > 4 << 30 {
                return Err(self.error(
                    Some(memory.span()),
                    "plugin.limits.memory",
                    format!("{bytes} bytes is above 4GiB, the most a 32-bit WebAssembly memory can address"),
                ));
            }
            if bytes < 1 << 20 {
                return Err(self.error(
                    Some(memory.span()),
                    "plugin.limits.memory",
                    format!("{bytes} bytes is below the 1MiB minimum a component needs"),
                ));
            }
            limits.memory_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        }
        if let Some(deadline) = p.deadline {
            if deadline.is_zero() {
                return Err(self.error(
                    find_line_span(self.source, "deadline"),
                    "plugin.limits.deadline",
                    "must be longer than 0s".into(),
                ));
            }
            limits.deadline = deadline;
        }
        if let Some(recycle) = &p.recycle_above {
            let bytes = self.byte_size(recycle, "plugin.limits.recycle_above")?;
            if bytes < 1 << 20 {
                return Err(self.error(
                    Some(recycle.span()),
                    "plugin.limits.recycle_above",
                    format!("{bytes} bytes is below 1MiB, less than any component starts with"),
                ));
            }
            if bytes >= limits.memory_bytes {
                return Err(self.error(
                    Some(recycle.span()),
                    "plugin.limits.recycle_above",
                    format!(
                        "{bytes} bytes is not below plugin.limits.memory ({} bytes): no instance could ever grow past it",
                        limits.memory_bytes
                    ),
                ));
            }
            limits.recycle_above_bytes = Some(bytes);
        }
        if let Some(host_memory) = &p.host_memory {
            let bytes = self.byte_size(host_memory, "plugin.limits.host_memory")?;
            if bytes < defaults::MIN_HOST_MEMORY_BYTES {
                return Err(self.error(
                    Some(host_memory.span()),
                    "plugin.limits.host_memory",
                    format!("{bytes} bytes is below the 1MiB minimum (log line buffers and remembered lookups alone take about half of it)"),
                ));
            }
            limits.host_memory_bytes = bytes;
        }
        if let Some(spanned) = &p.descriptors {
            let n = *spanned.get_ref();
            if !(1..=defaults::MAX_DESCRIPTORS).contains(&(n as usize)) {
                return Err(self.error(
                    Some(spanned.span()),
                    "plugin.limits.descriptors",
                    format!("{n} is not between 1 and {}", defaults::MAX_DESCRIPTORS),
                ));
            }
            limits.descriptors = n as usize;
        }
        for (value, key, into) in [
            (&p.log_rate, "plugin.limits.log_rate", &mut limits.log_rate),
            (
                &p.log_burst,
                "plugin.limits.log_burst",
                &mut limits.log_burst,
            ),
        ] {
            if let Some(n) = value {
                if *n.get_ref() == 0 {
                    return Err(self.error(Some(n.span()), key, "must be at least 1 line".into()));
                }
                *into = *n.get_ref();
            }
        }
        Ok(())
    }

    /// `[plugin.failure]`: retries, back-off and the poison policy.
    fn failure_into(
        &self,
        f: file::FailureFile,
        failure: &mut FailurePolicy,
    ) -> Result<(), ConfigError> {
        if let Some(n) = &f.max_attempts {
            if *n.get_ref() == 0 {
                return Err(self.error(
                    Some(n.span()),
                    "plugin.failure.max_attempts",
                    "must be at least 1".into(),
                ));
            }
            failure.max_attempts = *n.get_ref();
        }
        if let Some(d) = f.backoff_initial {
            failure.backoff_initial = d;
        }
        if let Some(d) = f.backoff_max {
            failure.backoff_max = d;
        }
        if failure.backoff_max < failure.backoff_initial {
            return Err(self.error(
                find_line_span(self.source, "backoff_max"),
                "plugin.failure.backoff_max",
                "must not be shorter than backoff_initial".into(),
            ));
        }
        failure.poison = match (
            f.poison.as_ref().map(|p| (*p.get_ref(), p.span())),
            &f.dead_letter_dir,
        ) {
            (None | Some((PoisonFile::Block, _)), _) => PoisonPolicy::Block,
            (Some((PoisonFile::DeadLetter, _)), Some(dir)) => {
                let path = self.resolve(dir.get_ref());
                self.create_dir(&path, Some(dir.span()), "plugin.failure.dead_letter_dir")?;
                PoisonPolicy::DeadLetter { dir: path }
            }
            (Some((PoisonFile::DeadLetter, span)), None) => {
                return Err(self.error(
                    Some(span),
                    "plugin.failure.poison",
                    "`dead-letter` needs `dead_letter_dir` (where failed batches are written)"
                        .into(),
                ));
            }
        };
        Ok(())
    }
}

/// 1-based line of a byte offset.
fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].matches('\n').count() + 1
}

/// The dotted key at a byte offset: the nearest `[table]` header above plus the key on
/// that line (best effort; used to name the key in serde's errors).
fn key_at(source: &str, offset: usize) -> Option<String> {
    let before = &source[..offset.min(source.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line_end = source[line_start..]
        .find('\n')
        .map_or(source.len(), |i| line_start + i);
    let line = &source[line_start..line_end];
    let table = before[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim().to_string());
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim().to_string())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match (table, key) {
        (Some(t), Some(k)) => Some(format!("{t}.{k}")),
        (None, Some(k)) => Some(k),
        (Some(t), None) => Some(t),
        (None, None) => None,
    }
}

/// Line of the first `key =` assignment (for keys whose value serde does not span).
fn find_line(source: &str, key: &str) -> Option<usize> {
    find_line_span(source, key).map(|s| line_of(source, s.start))
}

/// The line of `key =` inside `[section]`.
fn find_line_span_in(source: &str, section: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    let mut current = String::new();
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            current = trimmed
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
        } else if current == section
            && let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}

fn find_line_span(source: &str, key: &str) -> Option<std::ops::Range<usize>> {
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed.strip_prefix(key)
            && rest.trim_start().starts_with('=')
        {
            return Some(offset..offset + line.len());
        }
        offset += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Settings, ConfigError> {
        parse(Path::new("/etc/shoal/test.toml"), text)
    }

    #[test]
    fn an_empty_config_gives_every_default() {
        let s = parse_str("").expect("valid");
        assert!(s.plugin.is_none());
        assert_eq!(s.engine.max_instances, defaults::MAX_INSTANCES);
        assert!(s.engine.pooling);
    }

    #[test]
    fn plugin_paths_resolve_against_the_config_directory() {
        let s = parse_str(
            "[plugin]\npath = \"p/x.wasm\"\n[plugin.settings]\nfield = \"kind\"\nevery = 5\n",
        )
        .expect("valid");
        let p = s.plugin.expect("plugin");
        assert_eq!(p.path, Path::new("/etc/shoal/p/x.wasm"));
        assert_eq!(
            p.guest_settings,
            vec![
                ("every".into(), "5".into()),
                ("field".into(), "kind".into())
            ]
        );
        assert_eq!(p.failure.poison, PoisonPolicy::Block);
    }

    #[test]
    fn unknown_keys_name_file_line_and_key() {
        let err = parse_str("[plugin]\npath = \"x.wasm\"\n\n[plugin.limits]\nmemroy = \"1GiB\"\n")
            .unwrap_err();
        assert_eq!(err.line, Some(5));
        assert_eq!(err.key.as_deref(), Some("plugin.limits.memroy"));
        assert!(err.message.contains("unknown field `memroy`"), "{err}");
        assert!(
            err.to_string().starts_with(
                "config error in /etc/shoal/test.toml line 5 at key `plugin.limits.memroy`"
            ),
            "{err}"
        );
    }

    #[test]
    fn bad_values_name_the_key_and_say_why() {
        let err =
            parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.limits]\nmemory = \"12 parsecs\"\n")
                .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("plugin.limits.memory"))
        );
        assert!(err.message.contains("unknown size unit"), "{err}");

        let err = parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.limits]\ndeadline = \"soon\"\n")
            .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("plugin.limits.deadline"))
        );

        let err =
            parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.failure]\npoison = \"dead-letter\"\n")
                .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("plugin.failure.poison"))
        );
        assert!(err.message.contains("dead_letter_dir"), "{err}");

        let err = parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.failure]\npoison = \"drop\"\n")
            .unwrap_err();
        assert!(err.message.contains("unknown variant `drop`"), "{err}");

        let err = parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\ndirs = [{ host = \"/definitely/not/here\" }]\n").unwrap_err();
        assert_eq!(err.line, Some(4));
        assert!(err.message.contains("is not a directory"), "{err}");
    }

    #[test]
    fn a_consumer_config_validates_and_names_bad_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("c.toml");
        let ok = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"app\"\ninitial_position = \"LATEST\"\nlease_duration = \"2s\"\n[source]\nkind = \"local\"\ndirectory = \"stream\"\n[leases]\nkind = \"sqlite\"\npath = \"state/leases.db\"\n";
        let c = parse(&cfg, ok).expect("valid").consumer.expect("consumer");
        assert_eq!(c.initial_position, InitialPosition::Latest);
        assert_eq!(c.lease_duration, std::time::Duration::from_secs(2));
        assert_eq!(
            c.leases,
            LeaseStoreSettings::Sqlite {
                path: dir.path().join("state/leases.db")
            }
        );
        assert!(c.worker_id.contains(&std::process::id().to_string()));

        let err = parse(&cfg, &ok.replace("LATEST", "EARLIEST")).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(5), Some("consumer.initial_position"))
        );
        let err = parse(&cfg, &ok.replace("kind = \"local\"", "kind = \"kafka\"")).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("source.kind"));
        let err = parse(
            &cfg,
            &ok.replace(
                "[leases]\nkind = \"sqlite\"\npath = \"state/leases.db\"\n",
                "",
            ),
        )
        .unwrap_err();
        assert!(err.message.contains("missing [leases]"), "{err}");
    }

    #[test]
    fn recycle_above_lies_between_1mib_and_the_memory_cap() {
        let limits = |extra: &str| {
            parse_str(&format!(
                "[plugin]\npath = \"x.wasm\"\n[plugin.limits]\nmemory = \"64MiB\"\n{extra}"
            ))
        };
        let unset = limits("").expect("valid");
        assert_eq!(
            unset.plugin.expect("plugin").limits.recycle_above_bytes,
            None
        );
        let set = limits("recycle_above = \"32MiB\"\n").expect("valid");
        assert_eq!(
            set.plugin.expect("plugin").limits.recycle_above_bytes,
            Some(32 << 20)
        );
        for (value, reason) in [
            (
                "\"64MiB\"",
                "not below plugin.limits.memory (67108864 bytes)",
            ),
            ("\"512KiB\"", "below 1MiB"),
            ("\"lots\"", "is not a size"),
        ] {
            let err = limits(&format!("recycle_above = {value}\n")).unwrap_err();
            assert_eq!(
                (err.line, err.key.as_deref()),
                (Some(5), Some("plugin.limits.recycle_above")),
                "{err}"
            );
            assert!(err.message.contains(reason), "{value}: {err}");
        }
    }

    #[test]
    fn absurd_memory_limits_are_refused_with_the_reason() {
        let err = parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.limits]\nmemory = \"64GiB\"\n")
            .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("plugin.limits.memory"))
        );
        assert!(err.message.contains("above 4GiB"), "{err}");
        parse_str("[plugin]\npath = \"x.wasm\"\n[plugin.limits]\nmemory = \"4GiB\"\n")
            .expect("4GiB is the most, and allowed");
    }

    /// Settings the lease argument cannot hold with, and zero durations, are refused
    /// with the key, its line and the reason.
    #[test]
    fn lease_and_zero_durations_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("c.toml");
        let ok = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"app\"\nlease_duration = \"2s\"\n[source]\nkind = \"local\"\ndirectory = \"stream\"\n[leases]\nkind = \"sqlite\"\npath = \"l.db\"\n";
        parse(&cfg, ok).expect("valid");
        let err = parse(&cfg, &ok.replace("\"2s\"", "\"500ms\"")).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(5), Some("consumer.lease_duration"))
        );
        assert!(err.message.contains("at least 1s"), "{err}");
        for key in ["shard_sync_interval", "shutdown_timeout"] {
            let text = ok.replace(
                "lease_duration = \"2s\"\n",
                &format!("lease_duration = \"2s\"\n{key} = \"0s\"\n"),
            );
            let err = parse(&cfg, &text).unwrap_err();
            assert_eq!(
                (err.line, err.key.as_deref()),
                (Some(6), Some(format!("consumer.{key}").as_str()))
            );
            assert!(err.message.contains("longer than 0s"), "{err}");
        }
    }

    /// A shutdown must be able to finish the batch in flight: a timeout no longer than
    /// the guest deadline is refused, naming whichever key the file sets.
    #[test]
    fn stable_batches_are_off_by_default_and_refuse_a_checkpoint_interval() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("c.toml");
        let base = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"app\"\n[source]\nkind = \"local\"\ndirectory = \"stream\"\n[leases]\nkind = \"sqlite\"\npath = \"l.db\"\n";
        let consumer = |s: super::Settings| s.consumer.expect("a consumer section");
        assert!(!consumer(parse(&cfg, base).expect("defaults")).stable_batches);
        let stable = base.replace(
            "application = \"app\"\n",
            "application = \"app\"\nstable_batches = true\n",
        );
        assert!(consumer(parse(&cfg, &stable).expect("stable")).stable_batches);
        let both = stable.replace(
            "stable_batches = true\n",
            "checkpoint_interval = \"5s\"\nstable_batches = true\n",
        );
        let err = parse(&cfg, &both).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(6), Some("consumer.stable_batches"))
        );
        assert!(
            err.message
                .contains("cannot be combined with consumer.checkpoint_interval (5s)"),
            "{err}"
        );
    }

    #[test]
    fn a_shutdown_timeout_shorter_than_the_guest_deadline_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("c.toml");
        let base = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"app\"\n[source]\nkind = \"local\"\ndirectory = \"stream\"\n[leases]\nkind = \"sqlite\"\npath = \"l.db\"\n";
        parse(&cfg, base).expect("defaults: 30s timeout, 10s deadline");

        let short = base.replace(
            "application = \"app\"\n",
            "application = \"app\"\nshutdown_timeout = \"10s\"\n",
        );
        let err = parse(&cfg, &short).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(5), Some("consumer.shutdown_timeout"))
        );
        assert!(
            err.message.contains(
                "consumer.shutdown_timeout (10s) must be longer than plugin.limits.deadline (10s)"
            ),
            "{err}"
        );

        let long_deadline = format!("{base}[plugin.limits]\ndeadline = \"1m\"\n");
        let err = parse(&cfg, &long_deadline).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(12), Some("plugin.limits.deadline"))
        );
        assert!(
            err.message.contains("(30s)") && err.message.contains("(1m)"),
            "{err}"
        );
        parse(
            &cfg,
            &long_deadline.replace(
                "application = \"app\"\n",
                "application = \"app\"\nshutdown_timeout = \"2m\"\n",
            ),
        )
        .expect("a timeout longer than the deadline");
    }

    /// DynamoDB refuses table names under 3 characters at run time; the config says so
    /// first, naming the key that set the name.
    #[test]
    fn a_lease_table_name_dynamodb_would_refuse_is_caught_in_the_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("c.toml");
        let text = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"dq\"\n[source]\nkind = \"kinesis\"\nstream_name = \"s\"\n[leases]\nkind = \"dynamodb\"\n";
        let err = parse(&cfg, text).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("consumer.application"))
        );
        assert!(err.message.contains("3 to 255"), "{err}");
        parse(&cfg, &format!("{text}table = \"orders-leases\"\n")).expect("a table of its own");
        let err = parse(&cfg, &format!("{text}table = \"t\"\n")).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(10), Some("leases.table"))
        );
        // SQLite has no such rule.
        parse(
            &cfg,
            &text.replace(
                "kind = \"dynamodb\"\n",
                "kind = \"sqlite\"\npath = \"l.db\"\n",
            ),
        )
        .expect("sqlite");
    }

    #[test]
    fn sandbox_grants_resolve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("c.toml");
        let text = "[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\nenv = { MODE = \"test\" }\ndirs = [{ host = \"out\", guest = \"/data\", mode = \"read-write\", create = true }]\n[plugin.failure]\npoison = \"dead-letter\"\ndead_letter_dir = \"dl\"\n";
        let s = parse(&cfg, text).expect("valid").plugin.expect("plugin");
        assert_eq!(
            s.sandbox.env,
            vec![("MODE".to_string(), "test".to_string())]
        );
        assert_eq!(
            s.sandbox.dirs,
            vec![DirGrant {
                host: dir.path().join("out"),
                guest: "/data".into(),
                mode: DirMode::ReadWrite
            }]
        );
        assert_eq!(
            s.failure.poison,
            PoisonPolicy::DeadLetter {
                dir: dir.path().join("dl")
            }
        );
        assert!(dir.path().join("dl").is_dir());
    }
}

#[cfg(test)]
mod egress_grants {
    use std::path::Path;

    use crate::egress::{HostPattern, PortPattern};

    fn parse(text: &str) -> Result<super::Settings, super::ConfigError> {
        super::check(Path::new("/etc/shoal/shoal.toml"), text)
    }

    /// The outbound grants of a valid config.
    fn egress_of(text: &str) -> crate::egress::EgressGrants {
        parse(text)
            .expect("valid")
            .plugin
            .expect("plugin")
            .sandbox
            .egress
    }

    #[test]
    fn nothing_outbound_is_granted_unless_listed() {
        let s = parse("[plugin]\npath = \"x.wasm\"\n").expect("valid");
        assert!(s.plugin.expect("plugin").sandbox.egress.is_empty());
    }

    #[test]
    fn tcp_and_udp_entries_are_read() {
        let text = "[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\ntcp = [\"db.internal:5432\", \"127.0.0.1:6379\"]\nudp = [\"10.0.0.0/8:53\"]\n";
        let egress = egress_of(text);
        assert_eq!(egress.tcp.len(), 2);
        assert_eq!(egress.tcp[0].host, HostPattern::Name("db.internal".into()));
        assert_eq!(egress.tcp[1].port, PortPattern::Port(6379));
        assert_eq!(egress.udp[0].port, PortPattern::Port(53));
    }

    #[test]
    fn http_entries_are_read_and_bad_ones_named() {
        let text = "[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\nhttp = [\"https://api.example.com\", \"http://127.0.0.1:8080\"]\n";
        let egress = egress_of(text);
        assert_eq!(egress.http.len(), 2);
        assert_eq!(egress.http[0].port, PortPattern::Port(443));
        assert_eq!(egress.http[1].port, PortPattern::Port(8080));
        let text =
            "[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\nhttp = [\"ftp://files.example.com\"]\n";
        let err = parse(text).unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("plugin.sandbox.http"))
        );
        assert!(err.message.contains("must be `http` or `https`"), "{err}");
    }

    #[test]
    fn a_bad_entry_names_file_line_and_key() {
        let text = "[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\nhttp = [\n  \"https://api.example.com\",\n  \"https://*\",\n]\n";
        let err = parse(text).unwrap_err();
        assert_eq!(err.line, Some(6));
        assert_eq!(err.key.as_deref(), Some("plugin.sandbox.http"));
        assert!(err.message.contains("allow_any_host = true"), "{err}");
        let ok = "[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\nallow_any_host = true\ntcp = [\"*:443\"]\n";
        let egress = parse(ok)
            .expect("valid")
            .plugin
            .expect("plugin")
            .sandbox
            .egress;
        assert_eq!(egress.tcp[0].host, HostPattern::Any);

        let err = parse("[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\ntcp = [\"db.internal\"]\n")
            .unwrap_err();
        assert_eq!(
            (err.line, err.key.as_deref()),
            (Some(4), Some("plugin.sandbox.tcp"))
        );
        assert!(err.message.contains("name the port"), "{err}");
        let err = parse("[plugin]\npath = \"x.wasm\"\n[plugin.sandbox]\nudp = [\"dns:0\"]\n")
            .unwrap_err();
        assert_eq!(err.key.as_deref(), Some("plugin.sandbox.udp"));
    }
}

#[cfg(test)]
mod side_effects {
    #[test]
    fn check_creates_nothing_and_parse_creates_the_named_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("shoal.toml");
        let text = "[consumer]\napplication = \"a\"\n[source]\nkind = \"local\"\ndirectory = \"stream\"\n[leases]\nkind = \"sqlite\"\npath = \"l.db\"\n";
        super::check(&config, text).expect("valid");
        assert!(!dir.path().join("stream").exists());
        super::parse(&config, text).expect("valid");
        assert!(dir.path().join("stream").is_dir());
    }
}

#[cfg(test)]
mod example_configs {
    /// Every config shipped in `examples/` is valid.
    #[test]
    fn every_example_config_loads() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                if let Err(e) = super::load(&path) {
                    panic!("{e}");
                }
                checked += 1;
            }
        }
        assert!(checked >= 4, "only {checked} example configs found");
    }
}

/// The exact words of config errors, pinned: a change of wording is a change an operator
/// sees, so it must be made here on purpose.
#[cfg(test)]
mod golden {
    use super::*;

    const BASE: &str = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"orders\"\n[source]\nkind = \"kinesis\"\nstream_name = \"orders\"\n[leases]\nkind = \"dynamodb\"\n";

    fn error(text: &str) -> String {
        match check(Path::new("/etc/shoal/orders.toml"), text) {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn config_errors_read_as_pinned() {
        let cases: Vec<(String, &str)> = vec![
            (
                BASE.replace("[leases]\n", "[leases]\nregoin = \"eu-west-1\"\n"),
                "config error in /etc/shoal/orders.toml line 9 at key `leases.regoin`: unknown field `regoin`, expected one of `kind`, `path`, `table`, `region`, `endpoint`; did you mean `region`?",
            ),
            (
                format!("{BASE}[plugin.limits]\nmemroy = \"64MiB\"\n"),
                "config error in /etc/shoal/orders.toml line 11 at key `plugin.limits.memroy`: unknown field `memroy`, expected one of `memory`, `deadline`, `recycle_above`, `host_memory`, `descriptors`, `log_rate`, `log_burst`; did you mean `memory`?",
            ),
            (
                BASE.replace("[consumer]\n", "[consumer]\nshard_sink_interval = \"1s\"\n"),
                "config error in /etc/shoal/orders.toml line 4 at key `consumer.shard_sink_interval`: unknown field `shard_sink_interval`, expected one of `application`, `worker_id`, `initial_position`, `initial_timestamp`, `max_records`, `idle_time_between_reads`, `lease_duration`, `max_leases_per_worker`, `shard_sync_interval`, `checkpoint_interval`, `deliver_empty_batches`, `stable_batches`, `retrieval`, `consumer_name`, `read_ahead_records`, `read_ahead_bytes`, `shutdown_timeout`; did you mean `shard_sync_interval`?",
            ),
            (
                BASE.replace("[consumer]\n", "[consumer]\nlease_duration = \"500ms\"\n"),
                "config error in /etc/shoal/orders.toml line 4 at key `consumer.lease_duration`: must be at least 1s: a worker stops processing a fifth of the lease before it may expire, and that margin must cover interrupting a guest call and scheduling",
            ),
            (
                BASE.replace(
                    "stream_name = \"orders\"",
                    "stream_name = \"orders-${SHOAL_GOLDEN_UNSET}\"",
                ),
                "config error in /etc/shoal/orders.toml line 7 at key `source.stream_name`: environment variable SHOAL_GOLDEN_UNSET is not set (used as `${SHOAL_GOLDEN_UNSET}`)",
            ),
            (
                format!("{BASE}region = \"${{SHOAL_GOLDEN_UNSET}}\"\n"),
                "config error in /etc/shoal/orders.toml line 10 at key `leases.region`: environment variable SHOAL_GOLDEN_UNSET is not set (used as `${SHOAL_GOLDEN_UNSET}`)",
            ),
            (
                format!("{BASE}[metrics]\naddress = \"localhost\"\n"),
                "config error in /etc/shoal/orders.toml line 11 at key `metrics.address`: must be an IP address and port such as \"127.0.0.1:9464\" or \"0.0.0.0:9464\" (invalid socket address syntax)",
            ),
            (
                BASE.replace("[consumer]\n", "[consumer]\nshutdown_timeout = \"5s\"\n"),
                "config error in /etc/shoal/orders.toml line 4 at key `consumer.shutdown_timeout`: consumer.shutdown_timeout (5s) must be longer than plugin.limits.deadline (10s): a shutdown lets each shard's batch in flight finish, checkpoints it and releases the lease, and a shorter timeout interrupts that batch and leaves its records to be processed again",
            ),
            (
                BASE.replace("orders\"\n[source]", "or\"\n[source]"),
                "config error in /etc/shoal/orders.toml line 4 at key `consumer.application`: \"or\" cannot name a DynamoDB lease table: it must be 3 to 255 letters, digits, '-', '_' or '.' (set `leases.table` to use another name than the application's)",
            ),
            (
                BASE.replace("[consumer]\n", "[consumer]\nretrieval = \"fanout\"\n"),
                "config error in /etc/shoal/orders.toml line 4 at key `consumer.retrieval`: \"fanout\" is not \"polling\" or \"fan-out\"",
            ),
            (
                "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"orders\"\nretrieval = \"fan-out\"\n[source]\nkind = \"local\"\ndirectory = \"s\"\n[leases]\nkind = \"sqlite\"\npath = \"l.db\"\n".to_string(),
                "config error in /etc/shoal/orders.toml line 5 at key `consumer.retrieval`: \"fan-out\" (enhanced fan-out) needs a Kinesis source, and [source] kind is \"local\"; use \"polling\"",
            ),
            (
                BASE.replace(
                    "[consumer]\n",
                    "[consumer]\nretrieval = \"fan-out\"\nconsumer_name = \"orders archive\"\n",
                ),
                "config error in /etc/shoal/orders.toml line 5 at key `consumer.consumer_name`: \"orders archive\" is not a Kinesis consumer name: 1 to 128 letters, digits, '-', '_' or '.'",
            ),
            (
                BASE.replace("[consumer]\n", "[consumer]\nread_ahead_bytes = \"8 parsecs\"\n"),
                "config error in /etc/shoal/orders.toml line 4 at key `consumer.read_ahead_bytes`: unknown size unit \"parsecs\": use B, KiB, MiB, GiB, KB, MB or GB",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(error(&text), expected, "for:\n{text}");
        }
    }

    #[test]
    fn names_and_endpoints_take_environment_variables() {
        // Cargo sets CARGO_PKG_NAME for the tests it runs (no test writes the environment:
        // that would race with the others reading it).
        let stage = std::env::var("CARGO_PKG_NAME").expect("cargo sets CARGO_PKG_NAME");
        let text = BASE
            .replace(
                "stream_name = \"orders\"",
                "stream_name = \"orders-${CARGO_PKG_NAME}\"\nendpoint = \"https://kinesis.${CARGO_PKG_NAME}.example\"",
            )
            .replace(
                "[consumer]\n",
                "[consumer]\nretrieval = \"fan-out\"\nconsumer_name = \"archiver-${CARGO_PKG_NAME}\"\n",
            )
            + "table = \"leases-${CARGO_PKG_NAME}\"\n";
        let settings = check(Path::new("c.toml"), &text).expect("valid");
        let consumer = settings.consumer.expect("consumer");
        assert_eq!(
            consumer.retrieval,
            RetrievalSettings::FanOut {
                consumer_name: format!("archiver-{stage}")
            }
        );
        match consumer.source {
            SourceSettings::Kinesis {
                stream_name,
                endpoint,
                ..
            } => {
                assert_eq!(stream_name, Some(format!("orders-{stage}")));
                assert_eq!(endpoint, Some(format!("https://kinesis.{stage}.example")));
            }
            other => panic!("{other:?}"),
        }
        match consumer.leases {
            LeaseStoreSettings::DynamoDb { table, .. } => {
                assert_eq!(table, format!("leases-{stage}"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn retrieval_defaults_to_polling_with_read_ahead_and_fan_out_to_the_application_name() {
        let consumer = |text: &str| {
            check(Path::new("c.toml"), text)
                .expect("valid")
                .consumer
                .expect("consumer")
        };
        let polling = consumer(BASE);
        assert_eq!(polling.retrieval, RetrievalSettings::Polling);
        assert_eq!(
            (polling.read_ahead_records, polling.read_ahead_bytes),
            (10_000, 8 << 20)
        );
        let fan_out = consumer(&BASE.replace(
            "[consumer]\n",
            "[consumer]\nretrieval = \"fan-out\"\nread_ahead_records = 0\nread_ahead_bytes = \"1MiB\"\n",
        ));
        assert_eq!(
            fan_out.retrieval,
            RetrievalSettings::FanOut {
                consumer_name: "orders".into()
            }
        );
        assert_eq!(
            (fan_out.read_ahead_records, fan_out.read_ahead_bytes),
            (0, 1 << 20)
        );
    }

    #[test]
    fn a_typo_far_from_every_key_gets_no_suggestion() {
        let e = error(&BASE.replace("[leases]\n", "[leases]\nzzzzzzzz = 1\n"));
        assert!(!e.contains("did you mean"), "{e}");
    }
}

/// `docs/CONFIG.md` documents every key the config file takes: the keys are read off the
/// parser itself (its "unknown field … expected …" answer for each section), so a new key
/// without a line in the reference fails here.
#[cfg(test)]
mod reference {
    use super::*;

    const REFERENCE: &str = include_str!("../../../docs/CONFIG.md");

    /// The keys a section accepts, as the parser lists them.
    fn keys_of(text_with_an_unknown_key: &str) -> Vec<String> {
        let e = check(Path::new("c.toml"), text_with_an_unknown_key)
            .expect_err("an unknown key is refused")
            .message;
        let expected = e
            .split_once("expected")
            .unwrap_or_else(|| panic!("no key list in {e:?}"))
            .1;
        expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    }

    /// The rows of the reference's table under `heading`.
    fn documented(heading: &str) -> &'static str {
        let start = REFERENCE
            .find(&format!("# `[{heading}]`"))
            .unwrap_or_else(|| panic!("docs/CONFIG.md has no section for [{heading}]"));
        let rest = &REFERENCE[start + 1..];
        let end = rest.find("\n#").map_or(rest.len(), |i| i + 1);
        &rest[..end]
    }

    #[test]
    fn every_key_is_in_the_reference() {
        let base = "[plugin]\npath = \"x.wasm\"\n[consumer]\napplication = \"orders\"\n[source]\nkind = \"local\"\ndirectory = \"s\"\n[leases]\nkind = \"sqlite\"\npath = \"l.db\"\n";
        let sections = [
            (
                "consumer",
                base.replace("[consumer]\n", "[consumer]\nzz_unknown = 1\n"),
            ),
            (
                "source",
                base.replace("[source]\n", "[source]\nzz_unknown = 1\n"),
            ),
            (
                "leases",
                base.replace("[leases]\n", "[leases]\nzz_unknown = 1\n"),
            ),
            ("engine", format!("[engine]\nzz_unknown = 1\n{base}")),
            ("metrics", format!("{base}[metrics]\nzz_unknown = 1\n")),
            (
                "plugin",
                base.replace("[plugin]\n", "[plugin]\nzz_unknown = 1\n"),
            ),
            (
                "plugin.sandbox",
                format!("{base}[plugin.sandbox]\nzz_unknown = 1\n"),
            ),
            (
                "plugin.limits",
                format!("{base}[plugin.limits]\nzz_unknown = 1\n"),
            ),
            (
                "plugin.failure",
                format!("{base}[plugin.failure]\nzz_unknown = 1\n"),
            ),
        ];
        let mut checked = 0;
        for (section, text) in sections {
            let table = documented(section);
            for key in keys_of(&text) {
                let row = match (section, key.as_str()) {
                    // Sub-tables have sections of their own.
                    ("plugin", "sandbox" | "limits" | "failure") => {
                        documented(&format!("plugin.{key}"));
                        continue;
                    }
                    ("plugin", "settings") => "| `settings.*`".to_string(),
                    _ => format!("| `{key}`"),
                };
                assert!(
                    table.contains(&row),
                    "[{section}] {key} is missing from docs/CONFIG.md"
                );
                checked += 1;
            }
        }
        assert!(checked >= 40, "only {checked} keys checked");
    }
}
