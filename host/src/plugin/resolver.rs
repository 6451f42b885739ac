//! Name lookups for guests, kept apart from everything else. The system resolver
//! (`getaddrinfo`, as every other program on the host uses, `/etc/hosts` included) blocks
//! its thread and cannot be cancelled, so lookups run on a pool of threads of their own
//! ([`LOOKUP_THREADS`]) rather than the blocking pool that runs every shard's guest
//! calls; each instance may have at most [`LOOKUPS_PER_INSTANCE`] lookups queued or
//! running (a slot is held until the resolver returns, even after the guest stopped
//! waiting); and a guest waits at most [`LOOKUP_TIMEOUT`]. So one shard flooding slow
//! lookups holds two of the pool's threads, delays no other shard's guest calls, and
//! leaves the rest of the pool to other shards' lookups.

use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

/// Threads that run lookups, for the whole process.
pub const LOOKUP_THREADS: usize = 8;
/// Lookups one instance may have queued or running at once.
pub const LOOKUPS_PER_INSTANCE: usize = 2;
/// Longest a guest waits for one lookup (never longer than its call's deadline, which
/// ends the wait too).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a lookup gave no addresses.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The resolver answered with an error (no such name, no answer).
    #[error("{0}")]
    Failed(io::Error),
    /// No answer within the timeout (the slot stays taken until the resolver returns).
    #[error("no answer within {}", humantime::format_duration(*.0))]
    TimedOut(Duration),
    /// The lookup threads are gone (they could not be started).
    #[error("the lookup threads are not running")]
    Unavailable,
}

/// How a name is turned into addresses (the system resolver, or a stand-in in tests).
pub type ResolveFn = fn(&str) -> io::Result<Vec<IpAddr>>;

/// The system resolver.
pub fn system_resolve(name: &str) -> io::Result<Vec<IpAddr>> {
    Ok((name, 0)
        .to_socket_addrs()?
        .map(|a| a.ip().to_canonical())
        .collect())
}

struct Job {
    name: String,
    reply: oneshot::Sender<io::Result<Vec<IpAddr>>>,
    /// The instance's slot, given back when the resolver returns.
    _slot: OwnedSemaphorePermit,
}

/// A pool of lookup threads.
pub struct Resolver {
    /// `None` if no thread could be started.
    jobs: Option<Sender<Job>>,
}

impl Resolver {
    /// `threads` threads resolving with `resolve`.
    pub fn start(threads: usize, resolve: ResolveFn) -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut started = 0;
        for n in 0..threads {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("shoal-lookup-{n}"))
                .spawn(move || serve(&rx, resolve));
            match spawned {
                Ok(_) => started += 1,
                Err(e) => tracing::error!("cannot start a name lookup thread: {e}"),
            }
        }
        Self {
            jobs: (started > 0).then_some(tx),
        }
    }

    /// The process's pool, on the system resolver.
    pub fn global() -> &'static Resolver {
        static GLOBAL: OnceLock<Resolver> = OnceLock::new();
        GLOBAL.get_or_init(|| Resolver::start(LOOKUP_THREADS, system_resolve))
    }

    /// Resolve `name` in one of the instance's `slots`, waiting at most `timeout` (the
    /// wait for a slot included).
    pub async fn lookup(
        &self,
        name: &str,
        slots: &Arc<Semaphore>,
        timeout: Duration,
    ) -> Result<Vec<IpAddr>, LookupError> {
        let attempt = async {
            let slot = Arc::clone(slots)
                .acquire_owned()
                .await
                .map_err(|_| LookupError::Unavailable)?;
            let (reply, answer) = oneshot::channel();
            let job = Job {
                name: name.to_string(),
                reply,
                _slot: slot,
            };
            let sent = self.jobs.as_ref().map(|tx| tx.send(job));
            if !matches!(sent, Some(Ok(()))) {
                return Err(LookupError::Unavailable);
            }
            match answer.await {
                Ok(result) => result.map_err(LookupError::Failed),
                Err(_) => Err(LookupError::Unavailable),
            }
        };
        tokio::time::timeout(timeout, attempt)
            .await
            .unwrap_or(Err(LookupError::TimedOut(timeout)))
    }
}

/// The slots of one instance.
pub fn instance_slots() -> Arc<Semaphore> {
    Arc::new(Semaphore::new(LOOKUPS_PER_INSTANCE))
}

fn serve(jobs: &Mutex<Receiver<Job>>, resolve: ResolveFn) {
    loop {
        let job = {
            let rx = jobs.lock().unwrap_or_else(|p| p.into_inner());
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result = resolve(&job.name);
        // The guest may have stopped waiting; the slot is given back either way.
        let _ = job.reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A resolver that takes 2 s for names starting with `slow`, no time otherwise.
    fn slow_resolve(name: &str) -> io::Result<Vec<IpAddr>> {
        if name.starts_with("slow") {
            std::thread::sleep(Duration::from_secs(2));
        }
        Ok(vec![IpAddr::from([10, 0, 0, 1])])
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_instances_flood_holds_its_own_slots_and_no_one_elses() {
        let resolver = Arc::new(Resolver::start(4, slow_resolve));
        let flooding = instance_slots();
        let mut flood = Vec::new();
        for n in 0..20 {
            let resolver = Arc::clone(&resolver);
            let slots = Arc::clone(&flooding);
            flood.push(tokio::spawn(async move {
                resolver
                    .lookup(&format!("slow-{n}"), &slots, Duration::from_millis(100))
                    .await
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        // Another instance's lookup runs at once on a free thread.
        let started = Instant::now();
        let other = resolver
            .lookup("fast.example", &instance_slots(), Duration::from_secs(5))
            .await
            .expect("resolved");
        assert_eq!(other, vec![IpAddr::from([10, 0, 0, 1])]);
        // Behind the flood it would wait 2 s.
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "waited {:?} behind another instance's lookups",
            started.elapsed()
        );
        // The flood timed out waiting, two at a time in the resolver at most.
        let mut timed_out = 0;
        for task in flood {
            if matches!(task.await.expect("task"), Err(LookupError::TimedOut(_))) {
                timed_out += 1;
            }
        }
        assert_eq!(timed_out, 20);
        assert_eq!(
            flooding.available_permits(),
            0,
            "slots held until the resolver returns"
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(flooding.available_permits(), LOOKUPS_PER_INSTANCE);
    }

    #[tokio::test]
    async fn a_lookup_ends_at_its_timeout() {
        let resolver = Resolver::start(1, slow_resolve);
        let started = Instant::now();
        let result = resolver
            .lookup("slow.example", &instance_slots(), Duration::from_millis(50))
            .await;
        assert!(
            matches!(result, Err(LookupError::TimedOut(_))),
            "{result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
