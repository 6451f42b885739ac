//! One plugin generation: a compiled, validated component (`InstancePre`) ready to
//! instantiate per shard, plus its identity (generation number, path, content digest).

use std::path::PathBuf;
use std::time::Duration;

use super::bindings::ProcessorPre;
use super::cache::ArtifactSource;
use super::host::HostState;

/// A compiled and validated processor component (one generation of the plugin file).
pub struct Plugin {
    generation: u64,
    path: PathBuf,
    digest: String,
    size_bytes: usize,
    pre: ProcessorPre<HostState>,
    source: ArtifactSource,
    load_time: Duration,
    imports: Vec<String>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("generation", &self.generation)
            .field("path", &self.path)
            .field("digest", &self.short_digest())
            .finish_non_exhaustive()
    }
}

impl Plugin {
    pub(super) fn new(
        generation: u64,
        path: PathBuf,
        digest: String,
        size_bytes: usize,
        pre: ProcessorPre<HostState>,
        source: ArtifactSource,
        load_time: Duration,
    ) -> Self {
        let component = pre.instance_pre().component();
        let imports = component
            .component_type()
            .imports(component.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        Self {
            generation,
            path,
            digest,
            size_bytes,
            pre,
            source,
            load_time,
            imports,
        }
    }

    /// The names of everything the component imports (`log`, `wasi:cli/environment@0.2.0`, ...).
    pub fn imports(&self) -> &[String] {
        &self.imports
    }

    /// The generation number: 1 for the first file loaded, +1 per accepted reload.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The file this generation was loaded from.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Hex SHA-256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The first 12 hex digits of the digest, for logs.
    pub fn short_digest(&self) -> &str {
        &self.digest[..12.min(self.digest.len())]
    }

    /// Size of the component file.
    pub fn size_bytes(&self) -> usize {
        self.size_bytes
    }

    /// Whether it was compiled now or loaded from the artifact cache.
    pub fn source(&self) -> ArtifactSource {
        self.source
    }

    /// Time to read, compile or load, and validate.
    pub fn load_time(&self) -> Duration {
        self.load_time
    }

    pub(super) fn pre(&self) -> &ProcessorPre<HostState> {
        &self.pre
    }
}

/// Why a plugin file was rejected. The previous generation (if any) keeps running.
#[derive(Debug, thiserror::Error)]
pub enum PluginLoadError {
    /// The file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    Read {
        /// The plugin file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a WebAssembly component.
    #[error("plugin {path} is not a WebAssembly component: {reason}")]
    NotAComponent {
        /// The plugin file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// Wasmtime could not compile it.
    #[error("plugin {path} does not compile: {reason}")]
    Compile {
        /// The plugin file.
        path: PathBuf,
        /// Wasmtime's reason.
        reason: String,
    },
    /// It imports something shoal does not provide (e.g. `wasi:http`).
    #[error("plugin {path} imports something shoal does not provide: {reason}")]
    Imports {
        /// The plugin file.
        path: PathBuf,
        /// Which import and why.
        reason: String,
    },
    /// Its exports do not match `shoal:processor/processor@0.1.0`.
    #[error("plugin {path} does not implement the shoal:processor@0.1.0 world: {reason}")]
    Exports {
        /// The plugin file.
        path: PathBuf,
        /// Which export is missing or mistyped.
        reason: String,
    },
}
