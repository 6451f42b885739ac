//! `shoal check -c FILE`: everything `shoal run` would need, tried without consuming: the
//! config is valid; the plugin compiles and fits the world (and what its outbound imports
//! could reach with the grants); the stream answers a listing; the lease store is there
//! (or would be created). One line per check, `ok` or `FAIL` with the reason in plain
//! words (an AWS access denial names the IAM permission); the caller exits non-zero on
//! any failure.

use std::path::Path;
use std::sync::Arc;

use crate::config::{LeaseStoreSettings, Settings};
use crate::consumer::build_source;
use crate::lease::LeaseStore;
use crate::lease::dynamo::DynamoLeaseStore;
use crate::lease::sqlite::SqliteLeaseStore;
use crate::plugin::PluginEngine;

/// One check's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked: `config`, `plugin`, `stream`, `fan-out`, `lease store`.
    pub what: &'static str,
    /// `Ok(detail)` or `Err(reason)`.
    pub result: Result<String, String>,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.result {
            Ok(detail) => write!(f, "ok    {}: {detail}", self.what),
            Err(reason) => write!(f, "FAIL  {}: {reason}", self.what),
        }
    }
}

/// Run every check of the config at `path`, in order; later checks are skipped (not
/// reported) when the config itself is invalid.
pub async fn check(path: &Path) -> Vec<Finding> {
    let settings = match crate::config::check_file(path) {
        Ok(settings) => settings,
        Err(e) => {
            return vec![Finding {
                what: "config",
                result: Err(e.to_string()),
            }];
        }
    };
    let mut findings = vec![Finding {
        what: "config",
        result: Ok(format!("{} is valid", path.display())),
    }];
    findings.push(check_plugin(&settings).await);
    if let Some(consumer) = &settings.consumer {
        findings.push(check_stream(&consumer.source).await);
        if let Some(finding) = check_fan_out(consumer).await {
            findings.push(finding);
        }
        findings.push(check_lease_store(&consumer.leases, &consumer.application).await);
    }
    findings
}

async fn check_plugin(settings: &Settings) -> Finding {
    let what = "plugin";
    let Some(plugin) = &settings.plugin else {
        return Finding {
            what,
            result: Err("the config has no [plugin] section".into()),
        };
    };
    let engine = match PluginEngine::new(&crate::config::EngineSettings {
        pooling: false,
        ..settings.engine.clone()
    }) {
        Ok(engine) => engine,
        Err(e) => {
            return Finding {
                what,
                result: Err(format!("cannot start the WebAssembly engine: {e:#}")),
            };
        }
    };
    let path = plugin.path.clone();
    let grants = plugin.sandbox.egress.clone();
    let loaded = tokio::task::spawn_blocking(move || {
        match engine.load_file(&path, 1) {
            Ok(loaded) => Ok(loaded),
            // Say what does not fit in plain words, where the component can be read.
            Err(e) => Err(match engine.inspect_file(&path) {
                Ok(inspection) if !inspection.problems.is_empty() => {
                    format!("{e}; {}", inspection.problems.join("; "))
                }
                _ => e.to_string(),
            }),
        }
    })
    .await;
    let result = match loaded {
        Ok(Ok(loaded)) => {
            let mut detail = format!(
                "{} fits shoal:processor ({} bytes, sha256 {})",
                loaded.path().display(),
                loaded.size_bytes(),
                loaded.short_digest()
            );
            for sentence in crate::plugin::inspect::ungranted_outbound(loaded.imports(), &grants) {
                detail.push_str("; ");
                detail.push_str(&sentence);
            }
            Ok(detail)
        }
        Ok(Err(reason)) => Err(reason),
        Err(join) => Err(format!("the plugin check task failed: {join}")),
    };
    Finding { what, result }
}

async fn check_stream(source: &crate::config::SourceSettings) -> Finding {
    let source = build_source(source).await;
    let result = match source.list_shards().await {
        Ok(shards) => {
            let open = shards.iter().filter(|s| !s.is_closed()).count();
            Ok(format!(
                "{} lists {} shard(s), {open} open",
                source.stream_name(),
                shards.len()
            ))
        }
        Err(crate::source::SourceError::NotFound(e)) => Err(format!(
            "stream {} not found ({e}): check its name or ARN and the region",
            source.stream_name()
        )),
        Err(e) => Err(format!("stream {}: {e}", source.stream_name())),
    };
    Finding {
        what: "stream",
        result,
    }
}

/// With `retrieval = "fan-out"`: is the stream consumer there (or can it be registered)?
async fn check_fan_out(consumer: &crate::config::ConsumerSettings) -> Option<Finding> {
    use crate::source::fanout::{CONSUMERS_PER_STREAM, ConsumerState, consumer_state};
    let (consumer_name, source) = crate::consumer::fan_out_source(consumer).await?;
    let result = match consumer_state(&source, consumer_name).await {
        Ok(ConsumerState::Registered { arn, status }) => {
            Ok(format!("consumer {consumer_name} is {status} ({arn})"))
        }
        Ok(ConsumerState::Missing { registered }) if registered >= CONSUMERS_PER_STREAM => {
            Err(format!(
                "consumer {consumer_name} is not registered and the stream already has {registered} consumers, Kinesis' limit: deregister one or use consumer.retrieval = \"polling\""
            ))
        }
        Ok(ConsumerState::Missing { registered }) => Ok(format!(
            "consumer {consumer_name} is not registered yet: `shoal run` registers it ({registered} of {CONSUMERS_PER_STREAM} consumers on the stream now)"
        )),
        Err(e) => Err(format!("consumer {consumer_name}: {e}")),
    };
    Some(Finding {
        what: "fan-out",
        result,
    })
}

async fn check_lease_store(leases: &LeaseStoreSettings, application: &str) -> Finding {
    let what = "lease store";
    let result = match leases {
        LeaseStoreSettings::DynamoDb {
            table,
            region,
            endpoint,
        } => {
            let store =
                DynamoLeaseStore::connect(table, region.as_deref(), endpoint.as_deref()).await;
            match store.table_status().await {
                Ok(Some(status)) => match store.list().await {
                    Ok(leases) => Ok(format!(
                        "DynamoDB table {table} is {status}, {} lease(s)",
                        leases.len()
                    )),
                    Err(e) => Err(format!("DynamoDB table {table} is {status}, but: {e}")),
                },
                Ok(None) => Ok(format!(
                    "DynamoDB table {table} does not exist yet: the first `shoal run` creates it (on-demand billing; needs dynamodb:CreateTable)"
                )),
                Err(e) => Err(e.to_string()),
            }
        }
        LeaseStoreSettings::Sqlite { path } => sqlite_state(path, application).await,
    };
    Finding { what, result }
}

/// An existing SQLite file is opened and listed; a missing one needs a directory shoal
/// can create it in.
async fn sqlite_state(path: &Path, application: &str) -> Result<String, String> {
    if !path.exists() {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let writable = std::fs::metadata(dir)
            .map(|m| !m.permissions().readonly())
            .unwrap_or(false);
        return if writable || !dir.exists() {
            Ok(format!(
                "SQLite file {} does not exist yet: the first `shoal run` creates it",
                path.display()
            ))
        } else {
            Err(format!(
                "SQLite file {} does not exist and {} is not writable",
                path.display(),
                dir.display()
            ))
        };
    }
    let store: Arc<dyn LeaseStore> =
        Arc::new(SqliteLeaseStore::open(path, application).map_err(|e| e.to_string())?);
    if let Err(e) = store.prepare().await {
        return Err(format!("SQLite file {}: {e}", path.display()));
    }
    match store.list().await {
        Ok(leases) => Ok(format!(
            "SQLite file {}, {} lease(s) of {application}",
            path.display(),
            leases.len()
        )),
        Err(e) => Err(format!("SQLite file {}: {e}", path.display())),
    }
}
