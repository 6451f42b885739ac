//! `hostile`: a processor for tests that attacks its host. Each marker record is one
//! attempt to make the host hold, do or open more than a guest's limits allow, through
//! the WASI imports themselves (past anything a language's standard library would
//! check). Every other record is processed normally (after `pace_ms` of sleep per
//! batch), and the batch is checkpointed with `batch-end`.
//!
//! After an attack returns, the processor logs one line through `log`:
//! `hostile-report: <attack> <ok|err> in <ms> ms: <detail>`. An attack the host stops
//! (a trap) reports nothing; the host logs the trap. Resources an attack creates are
//! kept for the instance's lifetime, so they outlive the call that made them.
//!
//! | data | attack |
//! |---|---|
//! | `hostile:stdout-newlines:<bytes>` | one `output-stream.write` of `<bytes>` newlines on stdout, no `check-write` |
//! | `hostile:print-lines:<n>` | `<n>` lines on stdout |
//! | `hostile:log-lines:<n>` | `<n>` calls of the `log` import |
//! | `hostile:refused-lookups:<n>` | `<n>` lookups of distinct names no grant covers (one refusal warning each) |
//! | `hostile:http-bodies:<n>` | `<n>` requests, each with a body filled to its permit, never sent |
//! | `hostile:fields:<n>` | `<n>` HTTP `fields` maps of 60 KiB each |
//! | `hostile:sockets:<n>` | `<n>` TCP sockets, never connected |
//! | `hostile:files:<n>` | `<n>` files opened (created) in the first granted directory |
//! | `hostile:dir-listings:<n>` | `<n>` listings of the first granted directory |
//! | `hostile:file-write:<bytes>` | one `output-stream.write` of `<bytes>` to a file stream, no `check-write` |
//! | `hostile:pollables:<n>` | `<n>` clock pollables (an hour away) |
//! | `hostile:poll-list:<n>` | one `poll` of a list of `<n>` (the same ready pollable) |
//! | `hostile:random:<bytes>` | one `get-random-bytes` of `<bytes>` |
//! | `hostile:http-requests:<n>:<url>` | `<n>` GET requests to `<url>`, started and kept, never waited for (the call waits 300 ms so they connect) |
//! | `hostile:http-get:<url>` | one GET of `<url>`, waited for; reports the status or the error |
//! | `hostile:lookups:<n>:<suffix>` | `<n>` lookups of `<i>.<suffix>`, started and kept, never waited for |
//!
//! Settings: `pace_ms` (default 0): sleep per batch of ordinary records, so a victim
//! shard has a steady batch latency to compare; `log_each_batch` = `yes`: log one line
//! per batch of ordinary records, as a processor that reports its work does.

use std::any::Any;
use std::time::{Duration, Instant};

use shoal_sdk::{Batch, CheckpointDirective, ProcessError, Processor, Settings, ShardInfo};
use wasip2::clocks::monotonic_clock;
use wasip2::filesystem::preopens;
use wasip2::filesystem::types::{DescriptorFlags, OpenFlags, PathFlags};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingRequest, RequestOptions, Scheme};
use wasip2::sockets::network::IpAddressFamily;
use wasip2::sockets::{instance_network, ip_name_lookup, tcp_create_socket};

struct Hostile {
    pace: Duration,
    log_each_batch: bool,
    /// Everything the attacks created, kept alive for as long as the instance lives.
    hoard: Vec<Box<dyn Any>>,
}

fn number(arg: &str) -> u64 {
    arg.parse().unwrap_or(0)
}

/// A URL's scheme, authority and path (`http://host:port/path`).
fn split_url(url: &str) -> Option<(Scheme, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return None,
    };
    Some(match rest.find('/') {
        Some(i) => (scheme, &rest[..i], &rest[i..]),
        None => (scheme, rest, "/"),
    })
}

/// A GET request for `url`, or why not.
fn get_request(url: &str) -> Result<OutgoingRequest, String> {
    let (scheme, authority, path) = split_url(url).ok_or_else(|| format!("bad url {url}"))?;
    let request = OutgoingRequest::new(Fields::new());
    request.set_method(&Method::Get).map_err(|()| "method".to_string())?;
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme".to_string())?;
    request.set_authority(Some(authority)).map_err(|()| "authority".to_string())?;
    request.set_path_with_query(Some(path)).map_err(|()| "path".to_string())?;
    Ok(request)
}

impl Hostile {
    /// Run one attack; `Ok` or `Err` carry the detail for the report.
    fn attack(&mut self, name: &str, args: &[&str]) -> Result<String, String> {
        let arg = args.first().copied().unwrap_or("");
        match name {
            "stdout-newlines" => {
                let bytes = vec![b'\n'; number(arg) as usize];
                wasip2::cli::stdout::get_stdout()
                    .write(&bytes)
                    .map(|()| format!("wrote {} bytes", bytes.len()))
                    .map_err(|e| format!("{e:?}"))
            }
            "print-lines" => {
                for n in 0..number(arg) {
                    println!("hostile line {n}");
                }
                Ok(format!("printed {arg} lines"))
            }
            "log-lines" => {
                for n in 0..number(arg) {
                    shoal_sdk::info!("hostile log line {n}");
                }
                Ok(format!("logged {arg} lines"))
            }
            "refused-lookups" => {
                let network = instance_network::instance_network();
                let mut refused = 0;
                for n in 0..number(arg) {
                    if ip_name_lookup::resolve_addresses(&network, &format!("refused-{n}.hostile.example")).is_err() {
                        refused += 1;
                    }
                }
                Ok(format!("{refused} lookups refused"))
            }
            "http-bodies" => {
                let mut buffered = 0u64;
                for n in 0..number(arg) {
                    let request = OutgoingRequest::new(Fields::new());
                    let body = request.body().map_err(|()| format!("body {n} refused"))?;
                    let stream = body.write().map_err(|()| format!("stream {n} refused"))?;
                    loop {
                        let permit = stream.check_write().map_err(|e| format!("{e:?}"))?;
                        if permit == 0 {
                            break;
                        }
                        stream.write(&vec![b'x'; permit as usize]).map_err(|e| format!("{e:?}"))?;
                        buffered += permit;
                    }
                    self.hoard.push(Box::new((request, body, stream)));
                }
                Ok(format!("{arg} bodies holding {buffered} bytes"))
            }
            "fields" => {
                let value = vec![b'v'; 1000];
                for n in 0..number(arg) {
                    let fields = Fields::new();
                    for h in 0..60 {
                        fields.append(&format!("x-hostile-{h}"), &value).map_err(|e| format!("fields {n}: {e:?}"))?;
                    }
                    self.hoard.push(Box::new(fields));
                }
                Ok(format!("{arg} fields maps"))
            }
            "sockets" => {
                for n in 0..number(arg) {
                    let socket = tcp_create_socket::create_tcp_socket(IpAddressFamily::Ipv4)
                        .map_err(|e| format!("socket {n}: {e:?}"))?;
                    self.hoard.push(Box::new(socket));
                }
                Ok(format!("{arg} sockets"))
            }
            "files" => {
                let (dir, _) = preopens::get_directories().into_iter().next().ok_or("no granted directory")?;
                for n in 0..number(arg) {
                    let file = dir
                        .open_at(PathFlags::empty(), &format!("hostile-{n}"), OpenFlags::CREATE, DescriptorFlags::READ | DescriptorFlags::WRITE)
                        .map_err(|e| format!("file {n}: {e:?}"))?;
                    self.hoard.push(Box::new(file));
                }
                self.hoard.push(Box::new(dir));
                Ok(format!("{arg} files"))
            }
            "dir-listings" => {
                let (dir, _) = preopens::get_directories().into_iter().next().ok_or("no granted directory")?;
                for n in 0..number(arg) {
                    let listing = dir.read_directory().map_err(|e| format!("listing {n}: {e:?}"))?;
                    self.hoard.push(Box::new(listing));
                }
                self.hoard.push(Box::new(dir));
                Ok(format!("{arg} listings"))
            }
            "file-write" => {
                let (dir, _) = preopens::get_directories().into_iter().next().ok_or("no granted directory")?;
                let file = dir
                    .open_at(PathFlags::empty(), "hostile-write", OpenFlags::CREATE, DescriptorFlags::WRITE)
                    .map_err(|e| format!("{e:?}"))?;
                let stream = file.write_via_stream(0).map_err(|e| format!("{e:?}"))?;
                let bytes = vec![0u8; number(arg) as usize];
                let written = stream.write(&bytes).map(|()| format!("wrote {} bytes", bytes.len())).map_err(|e| format!("{e:?}"));
                self.hoard.push(Box::new((dir, file, stream)));
                written
            }
            "pollables" => {
                for _ in 0..number(arg) {
                    self.hoard.push(Box::new(monotonic_clock::subscribe_duration(3_600_000_000_000)));
                }
                Ok(format!("{arg} pollables"))
            }
            "poll-list" => {
                let ready = monotonic_clock::subscribe_duration(0);
                let list: Vec<&wasip2::io::poll::Pollable> = vec![&ready; number(arg) as usize];
                let woken = wasip2::io::poll::poll(&list);
                Ok(format!("{} of {} ready", woken.len(), list.len()))
            }
            "random" => {
                let bytes = wasip2::random::random::get_random_bytes(number(arg));
                Ok(format!("{} random bytes", bytes.len()))
            }
            "http-requests" => {
                let url = args.get(1).copied().unwrap_or("");
                let mut refused = None;
                for n in 0..number(arg) {
                    let request = get_request(url)?;
                    let options = RequestOptions::new();
                    match outgoing_handler::handle(request, Some(options)) {
                        Ok(pending) => self.hoard.push(Box::new(pending)),
                        Err(e) => {
                            refused = Some(format!("request {n}: {e:?}"));
                            break;
                        }
                    }
                }
                // Give the requests time to connect before the call returns.
                monotonic_clock::subscribe_duration(300_000_000).block();
                match refused {
                    Some(e) => Err(e),
                    None => Ok(format!("{arg} requests started")),
                }
            }
            "http-get" => {
                let request = get_request(arg)?;
                let pending = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
                pending.subscribe().block();
                match pending.get() {
                    Some(Ok(Ok(response))) => Ok(format!("status {}", response.status())),
                    Some(Ok(Err(code))) => Err(format!("{code:?}")),
                    other => Err(format!("{other:?}")),
                }
            }
            "lookups" => {
                let suffix = args.get(1).copied().unwrap_or("example");
                let network = instance_network::instance_network();
                for n in 0..number(arg) {
                    let lookup = ip_name_lookup::resolve_addresses(&network, &format!("n{n}.{suffix}"))
                        .map_err(|e| format!("lookup {n}: {e:?}"))?;
                    self.hoard.push(Box::new(lookup));
                }
                self.hoard.push(Box::new(network));
                Ok(format!("{arg} lookups started"))
            }
            other => Err(format!("unknown attack {other}")),
        }
    }
}

impl Processor for Hostile {
    fn initialize(_shard: &ShardInfo, settings: &Settings) -> Result<Self, ProcessError> {
        Ok(Hostile {
            pace: Duration::from_millis(settings.parse_or("pace_ms", 0)?),
            log_each_batch: settings.get("log_each_batch") == Some("yes"),
            hoard: Vec::new(),
        })
    }

    fn process(&mut self, _shard: &ShardInfo, batch: Batch) -> Result<CheckpointDirective, ProcessError> {
        let mut ordinary = false;
        for record in &batch.records {
            let text = String::from_utf8_lossy(&record.data);
            let Some(marker) = text.strip_prefix("hostile:") else {
                ordinary = true;
                continue;
            };
            // `<name>:<arg>` or `<name>:<n>:<rest>`; a URL keeps its own colons.
            let (name, rest) = marker.split_once(':').unwrap_or((marker, ""));
            let args: Vec<&str> = match name {
                "http-requests" | "lookups" => match rest.split_once(':') {
                    Some((n, tail)) => vec![n, tail],
                    None => vec![rest],
                },
                _ => vec![rest],
            };
            let started = Instant::now();
            let outcome = self.attack(name, &args);
            let ms = started.elapsed().as_secs_f64() * 1e3;
            match outcome {
                Ok(detail) => shoal_sdk::info!("hostile-report: {name} ok in {ms:.1} ms: {detail}"),
                Err(detail) => shoal_sdk::info!("hostile-report: {name} err in {ms:.1} ms: {detail}"),
            }
        }
        if ordinary && !self.pace.is_zero() {
            std::thread::sleep(self.pace);
        }
        if ordinary && self.log_each_batch {
            shoal_sdk::info!("processed a batch of {} records", batch.records.len());
        }
        Ok(CheckpointDirective::BatchEnd)
    }
}

shoal_sdk::export_processor!(Hostile);
