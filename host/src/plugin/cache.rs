//! The on-disk cache of compiled plugins, keyed by content hash and engine fingerprint,
//! so a restart (or a hot swap back to a known file) does not recompile.
//!
//! `Component::deserialize` trusts its input (it is native code), so the cache only ever
//! loads files this user wrote. The directory is created 0700 and opened once, without
//! following a link; it is refused with a warning if it is owned by someone else or
//! writable by group or others (never silently chmod'ed: someone else may already have
//! written into it). Every entry is then opened relative to that handle, without following
//! a link, and checked on the open file itself (a regular file this user owns, not
//! writable by others), so no path is checked and then opened again: a parent directory
//! someone else can rename or replace cannot swap in another file. Names carry the
//! content hash plus wasmtime's own compatibility fingerprint, and any file that fails
//! to load is compiled afresh and rewritten.

use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
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

/// A directory of precompiled components, held open.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    /// The path it was opened at (for messages only).
    dir: PathBuf,
    /// The directory itself: every entry is opened relative to it.
    handle: Arc<OwnedFd>,
}

impl ArtifactCache {
    /// Open (creating, mode 0700) a cache directory and check that it is safe to load
    /// native code from.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        use anyhow::Context;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create plugin cache directory {}", dir.display()))?;
        let handle = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            rustix::io::Errno::LOOP | rustix::io::Errno::NOTDIR => anyhow::anyhow!(
                "plugin cache directory {} is not a directory (a symlink or file): refusing to load compiled code from it",
                dir.display()
            ),
            e => anyhow::anyhow!("cannot open plugin cache directory {}: {e}", dir.display()),
        })?;
        let stat = rustix::fs::fstat(&handle)
            .with_context(|| format!("cannot stat plugin cache directory {}", dir.display()))?;
        trusted(&stat).map_err(|why| {
            anyhow::anyhow!(
                "plugin cache directory {} {why}: refusing to load compiled code from it (fix its owner or run `chmod 700` on it, or set another engine.cache_dir)",
                dir.display()
            )
        })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            handle: Arc::new(handle),
        })
    }

    /// The cache file name for these wasm bytes under this engine's configuration.
    fn entry(&self, engine: &Engine, digest: &str) -> String {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let fingerprint = hasher.finish();
        format!(
            "{digest}-wasmtime{}-{fingerprint:016x}.cwasm",
            wasmtime_version()
        )
    }

    /// Load the compiled component for `bytes` from the cache, or compile and store it.
    pub fn load_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        bytes: &[u8],
    ) -> wasmtime::Result<(Component, ArtifactSource)> {
        let entry = self.entry(engine, digest);
        let shown = self.dir.join(&entry);
        // Read into memory rather than `deserialize_file`, which maps the file: a mapped
        // file truncated by anyone while in use would kill the host with SIGBUS.
        if let Some(artifact) = self.read_trusted(&entry) {
            // SAFETY: the bytes come from a file opened, without following links, in a
            // directory only this user can write (checked on the open handle), checked on
            // the open file to be a regular file only this user can write, under a name
            // derived from the wasm content hash and this engine's compatibility hash,
            // written by `store` below from `Component::serialize`. Wasmtime also checks
            // the header against this engine and rejects a mismatch.
            match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok((component, ArtifactSource::Cached)),
                Err(e) => tracing::warn!(
                    artifact = %shown.display(),
                    "ignoring unusable cached plugin artifact, recompiling: {e:#}"
                ),
            }
        }
        let component = Component::new(engine, bytes)?;
        if let Err(e) = self.store(&entry, &component) {
            tracing::warn!(artifact = %shown.display(), "cannot write plugin cache entry: {e:#}");
        }
        Ok((component, ArtifactSource::Compiled))
    }

    /// The entry's bytes, if it exists and only this user can have written it.
    fn read_trusted(&self, entry: &str) -> Option<Vec<u8>> {
        let shown = self.dir.join(entry);
        let opened = rustix::fs::openat(
            &*self.handle,
            entry,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let fd = match opened {
            Ok(fd) => fd,
            Err(rustix::io::Errno::NOENT) => return None,
            Err(rustix::io::Errno::LOOP) => {
                tracing::warn!(
                    artifact = %shown.display(),
                    "not loading a cached plugin artifact that is a symlink; compiling instead"
                );
                return None;
            }
            Err(e) => {
                tracing::warn!(artifact = %shown.display(), "cannot open cached plugin artifact, compiling instead: {e}");
                return None;
            }
        };
        let verdict = match rustix::fs::fstat(&fd) {
            Ok(stat) if rustix::fs::FileType::from_raw_mode(stat.st_mode).is_file() => {
                trusted(&stat)
            }
            Ok(_) => Err("is not a regular file".into()),
            Err(e) => Err(format!("cannot be checked ({e})")),
        };
        if let Err(why) = verdict {
            tracing::warn!(
                artifact = %shown.display(),
                "not loading a cached plugin artifact that {why}; compiling instead"
            );
            return None;
        }
        let mut bytes = Vec::new();
        std::fs::File::from(fd).read_to_end(&mut bytes).ok()?;
        Some(bytes)
    }

    /// Write the entry: a new private file beside it, then renamed over it, both
    /// relative to the directory handle.
    fn store(&self, entry: &str, component: &Component) -> anyhow::Result<()> {
        let serialized = component.serialize().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (tmp_name, fd) = loop {
            let name = format!(".tmp-{}-{:016x}", std::process::id(), fastrand::u64(..));
            match rustix::fs::openat(
                &*self.handle,
                name.as_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => break (name, fd),
                Err(rustix::io::Errno::EXIST) => continue,
                Err(e) => return Err(e.into()),
            }
        };
        let mut file = std::fs::File::from(fd);
        let written = file
            .write_all(&serialized)
            .and_then(|()| file.sync_all())
            .map_err(anyhow::Error::from)
            .and_then(|()| {
                rustix::fs::renameat(&*self.handle, tmp_name.as_str(), &*self.handle, entry)
                    .map_err(anyhow::Error::from)
            });
        if written.is_err() {
            let _ = rustix::fs::unlinkat(
                &*self.handle,
                tmp_name.as_str(),
                rustix::fs::AtFlags::empty(),
            );
        }
        written
    }
}

/// Whether an open file's status says only this user can have written it: owned by
/// this user, not writable by group or others. `Err` says why not.
fn trusted(stat: &rustix::fs::Stat) -> Result<(), String> {
    let uid = rustix::process::geteuid().as_raw();
    if stat.st_uid != uid {
        return Err(format!(
            "is owned by uid {}, not by this user ({uid})",
            stat.st_uid
        ));
    }
    let mode = stat.st_mode & 0o777;
    if mode & 0o022 != 0 {
        return Err(format!("is writable by group or others (mode {mode:o})"));
    }
    Ok(())
}

/// Hex SHA-256 of the wasm bytes: the plugin's content identity.
pub fn content_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The wasmtime version compiled in, part of every cache key.
pub fn wasmtime_version() -> &'static str {
    "48.0.8"
}
