//! The on-disk cache of compiled plugins, keyed by content hash and engine fingerprint,
//! so a restart (or a hot swap back to a known file) does not recompile.
//!
//! `Component::deserialize` trusts its input (it is native code), so the cache only ever
//! loads files shoal itself wrote: the directory is created 0700 and must be owned by
//! this user and not writable by others, names carry the content hash plus wasmtime's
//! own compatibility fingerprint, and any file that fails to load is compiled afresh and
//! rewritten.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Where a component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactSource {
    /// Compiled now (and written to the cache if one is configured).
    Compiled,
    /// Loaded from the cache.
    Cached,
}

/// A directory of precompiled components.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// Open (creating, mode 0700) a cache directory and check that it is safe to load
    /// native code from.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        #[cfg(unix)]
        {
            use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| {
                    format!("cannot create plugin cache directory {}", dir.display())
                })?;
            let meta = std::fs::metadata(dir)
                .with_context(|| format!("cannot stat plugin cache directory {}", dir.display()))?;
            let uid = current_uid();
            if meta.uid() != uid {
                anyhow::bail!(
                    "plugin cache directory {} is owned by uid {}, not by this user ({uid}): refusing to load compiled code from it",
                    dir.display(),
                    meta.uid()
                );
            }
            // Our own directory: make it private whatever mode it was created with.
            if meta.mode() & 0o077 != 0 {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .with_context(|| format!("cannot set mode 0700 on {}", dir.display()))?;
            }
        }
        #[cfg(not(unix))]
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create plugin cache directory {}", dir.display()))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    /// The cache file for these wasm bytes under this engine's configuration.
    fn entry(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = hasher.finish();
        self.dir.join(format!(
            "{digest}-wasmtime{}-{fingerprint:016x}.cwasm",
            wasmtime_version()
        ))
    }

    /// Load the compiled component for `bytes` from the cache, or compile and store it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, ArtifactSource)> {
        let entry = self.entry(engine, digest);
        // Read into memory rather than `deserialize_file`, which maps the file: a mapped
        // file truncated by anyone while in use would kill the host with SIGBUS.
        if let Ok(artifact) = std::fs::read(&entry) {
            // SAFETY: the bytes come from a directory only this user can write, under a
            // name derived from the wasm content hash and this engine's compatibility
            // hash, written by `store` below from `Component::serialize`. Wasmtime also
            // checks the header against this engine and rejects a mismatch.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, ArtifactSource::Cached)),
                Err(e) => tracing::warn!(
                    artifact = %entry.display(),
                    "ignoring unusable cached plugin artifact, recompiling: {e:#}"
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&entry, &component) {
            tracing::warn!(artifact = %entry.display(), "cannot write plugin cache entry: {e:#}");
        }
        Ok((component, ArtifactSource::Compiled))
    }

    fn store(&self, entry: &Path, component: &Component) -> anyhow::Result<()> {
        let serialized = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut tmp = tempfile_in(&self.dir)?;
        tmp.1.write_all(&serialized)?;
        tmp.1.sync_all()?;
        std::fs::rename(&tmp.0, entry)?;
        Ok(())
    }
}

/// A uniquely named new file in `dir` (no extra dependency for one use).
fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    loop {
        let path = dir.join(format!(
            ".tmp-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The uid this process runs as (the owner of `/proc/self`; avoids a libc dependency).
#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(0)
}

/// Hex SHA-256 of the wasm bytes: the plugin's content identity.
pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The wasmtime version compiled in, part of every cache key.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
