//! The on-disk cache of compiled plugins, keyed by content hash and engine fingerprint,
//! so a restart (or a hot swap back to a known file) does not recompile.
//!
//! `Component::deserialize` trusts its input (it is native code), so the cache only ever
//! loads files this user wrote: the directory is created 0700, and a directory or entry
//! owned by someone else or writable by group or others is refused with a warning (never
//! silently chmod'ed: someone else may already have written into it). Names carry the
//! content hash plus wasmtime's own compatibility fingerprint, and any file that fails
//! to load is compiled afresh and rewritten.

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
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| {
                    format!("cannot create plugin cache directory {}", dir.display())
                })?;
            let meta = std::fs::symlink_metadata(dir)
                .with_context(|| format!("cannot stat plugin cache directory {}", dir.display()))?;
            if !meta.is_dir() {
                anyhow::bail!(
                    "plugin cache directory {} is not a directory (a symlink or file): refusing to load compiled code from it",
                    dir.display()
                );
            }
            trusted(&meta).map_err(|why| {
                anyhow::anyhow!(
                    "plugin cache directory {} {why}: refusing to load compiled code from it (fix its owner or run `chmod 700` on it, or set another engine.cache_dir)",
                    dir.display()
                )
            })?;
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
        if let Some(artifact) = self.read_trusted(&entry) {
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

    /// The entry's bytes, if it exists and only this user can have written it.
    fn read_trusted(&self, entry: &Path) -> Option<Vec<u8>> {
        #[cfg(unix)]
        {
            let meta = std::fs::symlink_metadata(entry).ok()?;
            let verdict = if meta.is_file() {
                trusted(&meta)
            } else {
                Err("is not a regular file".into())
            };
            if let Err(why) = verdict {
                tracing::warn!(
                    artifact = %entry.display(),
                    "not loading a cached plugin artifact that {why}; compiling instead"
                );
                return None;
            }
        }
        std::fs::read(entry).ok()
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
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        match options.open(&path) {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether a cache path's metadata says only this user can have written it: owned by
/// this user, not writable by group or others. `Err` says why not.
#[cfg(unix)]
fn trusted(meta: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let uid = current_uid().ok_or("cannot be checked (this process's uid is unknown)")?;
    if meta.uid() != uid {
        return Err(format!(
            "is owned by uid {}, not by this user ({uid})",
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "is writable by group or others (mode {:o})",
            meta.mode() & 0o777
        ));
    }
    Ok(())
}

/// The uid this process runs as (the owner of `/proc/self`; avoids a libc dependency).
#[cfg(unix)]
fn current_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).ok()
}

/// Hex SHA-256 of the wasm bytes: the plugin's content identity.
pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The wasmtime version compiled in, part of every cache key.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
