//! Guest stdout/stderr: line-buffered into `tracing` events tagged with the shard and plugin
//! generation, so a guest's `println!` lands in the host log instead of vanishing.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Longest line forwarded as one event; longer output is split.
const MAX_LINE: usize = 16 * 1024;
/// How much a guest may write per `check-write` permit.
const WRITE_PERMIT: usize = 64 * 1024;

/// Which guest stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestStream {
    /// The guest's stdout.
    Stdout,
    /// The guest's stderr.
    Stderr,
}

impl GuestStream {
    fn label(self) -> &'static str {
        match self {
            GuestStream::Stdout => "stdout",
            GuestStream::Stderr => "stderr",
        }
    }
}

/// Who is writing: attached to every forwarded line.
#[derive(Debug, Clone)]
pub struct LogTags {
    /// Stream name.
    pub stream: Arc<str>,
    /// Shard id.
    pub shard: Arc<str>,
    /// Plugin generation.
    pub generation: u64,
}

/// A guest output stream that forwards complete lines to `tracing`.
///
/// The pending partial line is shared between every stream handle the guest opens for
/// the same descriptor, and flushed when the last handle is dropped.
#[derive(Clone)]
pub struct TracingOutput {
    which: GuestStream,
    tags: LogTags,
    pending: Arc<Mutex<Vec<u8>>>,
}

impl TracingOutput {
    /// A forwarder for one of the guest's standard streams.
    pub fn new(which: GuestStream, tags: LogTags) -> Self {
        Self {
            which,
            tags,
            pending: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.extend_from_slice(bytes);
        while let Some(pos) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=pos).collect();
            self.emit(&line[..line.len() - 1]);
        }
        while pending.len() > MAX_LINE {
            let line: Vec<u8> = pending.drain(..MAX_LINE).collect();
            self.emit(&line);
        }
    }

    fn flush_partial(&self) {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        if !pending.is_empty() {
            let line = std::mem::take(&mut *pending);
            self.emit(&line);
        }
    }

    fn emit(&self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches('\r');
        if text.trim().is_empty() {
            return;
        }
        let LogTags {
            stream,
            shard,
            generation,
        } = &self.tags;
        match self.which {
            GuestStream::Stdout => tracing::info!(
                target: "shoal::guest",
                stream = %stream, shard = %shard, generation, fd = self.which.label(), "{text}"
            ),
            GuestStream::Stderr => tracing::warn!(
                target: "shoal::guest",
                stream = %stream, shard = %shard, generation, fd = self.which.label(), "{text}"
            ),
        }
    }
}

impl Drop for TracingOutput {
    fn drop(&mut self) {
        // The last handle flushes a final unterminated line.
        if Arc::strong_count(&self.pending) == 1 {
            self.flush_partial();
        }
    }
}

impl IsTerminal for TracingOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for TracingOutput {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TracingOutput {
    async fn ready(&mut self) {}
}

impl OutputStream for TracingOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_PERMIT)
    }
}

impl tokio::io::AsyncWrite for TracingOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.push(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
