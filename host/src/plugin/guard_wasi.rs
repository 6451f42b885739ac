//! Checks in front of the WASI imports through which a guest could make the host hold or
//! do more than its limits allow. Each shadows wasmtime-wasi's function of the same name,
//! checks, then calls wasmtime-wasi's own implementation:
//! - `output-stream.write`: the length against the stream's own `check-write` permit,
//!   before the bytes are copied out of the guest (wasmtime-wasi's file streams accept
//!   any length and hand it all to one blocking job); past the permit is a trap, as the
//!   interface says.
//! - `poll`: at most [`MAX_POLL_LIST`] pollables, counted before the list is read.
//! - `descriptor.read-via-stream`, `write-via-stream`, `append-via-stream`,
//!   `read-directory`: within `plugin.limits.host_memory`, else `insufficient-memory`.
//! - `descriptor.open-at`, `create-tcp-socket`, `create-udp-socket`: within
//!   `plugin.limits.descriptors` (and host memory), else `quota` (files) or
//!   `new-socket-limit` (sockets).
//! - `tcp-socket.finish-connect`: its two streams within host memory.
//!
//! Every refusal is logged (within the instance's log rate, naming the limit) and counted
//! in `shoal_guest_limit_refusals_total`.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource, WasmList};
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    DescriptorFlags, ErrorCode as FsErrorCode, HostDescriptor, OpenFlags, PathFlags,
};
use wasmtime_wasi::p2::bindings::io::{poll, streams};
use wasmtime_wasi::p2::bindings::sockets::network::{
    ErrorCode as SocketErrorCode, IpAddressFamily,
};
use wasmtime_wasi::p2::bindings::sockets::tcp::HostTcpSocket;
use wasmtime_wasi::p2::bindings::sockets::{tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, DynPollable, FsError, ReaddirIterator, SocketError, TcpSocket,
    UdpSocket,
};
use wasmtime_wasi::sockets::WasiSocketsView;

use super::budget::{HostRefused, Limit, STREAM_BYTES};
use super::host::HostState;

const IO_STREAMS: &str = "wasi:io/streams@0.2.12";
const IO_POLL: &str = "wasi:io/poll@0.2.12";
const FS_TYPES: &str = "wasi:filesystem/types@0.2.12";
const TCP: &str = "wasi:sockets/tcp@0.2.12";
const TCP_CREATE: &str = "wasi:sockets/tcp-create-socket@0.2.12";
const UDP_CREATE: &str = "wasi:sockets/udp-create-socket@0.2.12";

/// Most pollables one `poll` call may wait on: a fixed cap (the list is counted before it
/// is read, so a longer one costs the host nothing).
pub const MAX_POLL_LIST: usize = 4096;

/// Replace the checked functions in `linker` (call after adding WASI).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    streams_and_poll(linker)?;
    filesystem(linker)?;
    sockets(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Log a refusal through the instance's log limit, and hand it back.
pub(super) fn said(state: &HostState, refused: HostRefused) -> HostRefused {
    if state.guest_log().admit() {
        let tags = state.guest_log().tags();
        tracing::warn!(
            target: "shoal::sandbox",
            stream = %tags.stream, shard = %tags.shard, generation = tags.generation,
            limit = refused.limit.key(),
            "guest {refused}"
        );
    }
    refused
}

fn streams_and_poll(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut io = linker.instance(IO_STREAMS)?;
    io.func_wrap(
        "[method]output-stream.write",
        |mut store: StoreContextMut<'_, HostState>,
         (stream, contents): (Resource<DynOutputStream>, WasmList<u8>)| {
            let len = contents.len();
            let permit = store.data_mut().table_mut().get_mut(&stream)?.check_write();
            match permit {
                Ok(permit) if len > permit => {
                    let refused = HostRefused::new(
                        Limit::WritePermit,
                        format!(
                            "a write of {len} bytes past the stream's check-write permit of {permit} bytes"
                        ),
                    );
                    return Err(said(store.data(), refused).into());
                }
                Ok(_) => {}
                Err(e) => {
                    let table = store.data_mut().table_mut();
                    return Ok((Err(streams::Host::convert_stream_error(table, e)?),));
                }
            }
            let bytes = contents.as_le_slice(&store).to_vec();
            let table = store.data_mut().table_mut();
            let written = streams::HostOutputStream::write(table, stream, bytes);
            Ok((match written {
                Ok(()) => Ok(()),
                Err(e) => Err(streams::Host::convert_stream_error(table, e)?),
            },))
        },
    )?;
    let mut io = linker.instance(IO_POLL)?;
    io.func_wrap_async(
        "poll",
        |mut store: StoreContextMut<'_, HostState>,
         (list,): (WasmList<Resource<DynPollable>>,)| {
            Box::new(async move {
                if list.len() > MAX_POLL_LIST {
                    let refused = HostRefused::new(
                        Limit::PollList,
                        format!(
                            "a poll of {} pollables, more than the {MAX_POLL_LIST} one call may wait on",
                            list.len()
                        ),
                    );
                    return Err(said(store.data(), refused).into());
                }
                let pollables = list
                    .iter(&mut store)?
                    .collect::<wasmtime::Result<Vec<_>>>()?;
                let ready = poll::Host::poll(store.data_mut().table_mut(), pollables).await?;
                Ok((ready,))
            })
        },
    )?;
    Ok(())
}

/// A filesystem result for the guest: its error code, or a trap for a host failure.
fn fs_result<T>(result: Result<T, FsError>) -> wasmtime::Result<(Result<T, FsErrorCode>,)> {
    Ok((match result {
        Ok(v) => Ok(v),
        Err(e) => Err(e.downcast()?),
    },))
}

/// The filesystem error a refusal is reported as.
fn fs_refusal(state: &HostState, refused: HostRefused) -> FsErrorCode {
    match said(state, refused).limit {
        Limit::Descriptors => FsErrorCode::Quota,
        _ => FsErrorCode::InsufficientMemory,
    }
}

fn admit_stream(state: &mut HostState, what: &str) -> Result<(), FsErrorCode> {
    let (table, budget) = state.table_and_budget();
    budget
        .admit(table, STREAM_BYTES, what)
        .map_err(|refused| fs_refusal(state, refused))
}

fn filesystem(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut fs_types = linker.instance(FS_TYPES)?;
    fs_types.func_wrap(
        "[method]descriptor.read-via-stream",
        |mut store: StoreContextMut<'_, HostState>, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            if let Err(code) = admit_stream(state, "a file input stream") {
                return Ok((Err(code),));
            }
            fs_result(HostDescriptor::read_via_stream(
                &mut state.filesystem(),
                fd,
                offset,
            ))
        },
    )?;
    fs_types.func_wrap(
        "[method]descriptor.write-via-stream",
        |mut store: StoreContextMut<'_, HostState>, (fd, offset): (Resource<Descriptor>, u64)| {
            let state = store.data_mut();
            if let Err(code) = admit_stream(state, "a file output stream") {
                return Ok((Err(code),));
            }
            fs_result(HostDescriptor::write_via_stream(
                &mut state.filesystem(),
                fd,
                offset,
            ))
        },
    )?;
    fs_types.func_wrap(
        "[method]descriptor.append-via-stream",
        |mut store: StoreContextMut<'_, HostState>, (fd,): (Resource<Descriptor>,)| {
            let state = store.data_mut();
            if let Err(code) = admit_stream(state, "a file output stream") {
                return Ok((Err(code),));
            }
            fs_result(HostDescriptor::append_via_stream(
                &mut state.filesystem(),
                fd,
            ))
        },
    )?;
    fs_types.func_wrap_async(
        "[method]descriptor.read-directory",
        |mut store: StoreContextMut<'_, HostState>, (fd,): (Resource<Descriptor>,)| {
            Box::new(async move {
                let state = store.data_mut();
                let (table, budget) = state.table_and_budget();
                if let Err(refused) = budget.admit_directory_listing(table) {
                    let code: Result<Resource<ReaddirIterator>, _> =
                        Err(fs_refusal(state, refused));
                    return Ok((code,));
                }
                fs_result(HostDescriptor::read_directory(&mut state.filesystem(), fd).await)
            })
        },
    )?;
    fs_types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store: StoreContextMut<'_, HostState>,
         (fd, path_flags, path, oflags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let state = store.data_mut();
                let (table, budget) = state.table_and_budget();
                if let Err(refused) = budget.admit_descriptor(table, 0, "a file") {
                    let code: Result<Resource<Descriptor>, _> = Err(fs_refusal(state, refused));
                    return Ok((code,));
                }
                let opened = HostDescriptor::open_at(
                    &mut state.filesystem(),
                    fd,
                    path_flags,
                    path,
                    oflags,
                    flags,
                )
                .await;
                if let Ok(descriptor) = &opened {
                    let (table, budget) = state.table_and_budget();
                    if matches!(table.get(descriptor), Ok(Descriptor::Dir(_))) {
                        budget.opened_dir(descriptor.rep());
                    }
                }
                fs_result(opened)
            })
        },
    )?;
    Ok(())
}

/// A sockets result for the guest: its error code, or a trap for a host failure.
fn socket_result<T>(
    result: Result<T, SocketError>,
) -> wasmtime::Result<(Result<T, SocketErrorCode>,)> {
    Ok((match result {
        Ok(v) => Ok(v),
        Err(e) => Err(e.downcast()?),
    },))
}

/// The sockets error a refusal is reported as.
fn socket_refusal(state: &HostState, refused: HostRefused) -> SocketErrorCode {
    match said(state, refused).limit {
        Limit::Descriptors => SocketErrorCode::NewSocketLimit,
        _ => SocketErrorCode::OutOfMemory,
    }
}

fn admit_socket(state: &mut HostState) -> Result<(), SocketErrorCode> {
    let (table, budget) = state.table_and_budget();
    budget
        .admit_descriptor(table, 0, "a socket")
        .map_err(|refused| socket_refusal(state, refused))
}

fn sockets(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut create = linker.instance(TCP_CREATE)?;
    create.func_wrap(
        "create-tcp-socket",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            let state = store.data_mut();
            if let Err(code) = admit_socket(state) {
                let refused: Result<Resource<TcpSocket>, _> = Err(code);
                return Ok((refused,));
            }
            socket_result(tcp_create_socket::Host::create_tcp_socket(
                &mut state.sockets(),
                family,
            ))
        },
    )?;
    let mut create = linker.instance(UDP_CREATE)?;
    create.func_wrap_async(
        "create-udp-socket",
        |mut store: StoreContextMut<'_, HostState>, (family,): (IpAddressFamily,)| {
            Box::new(async move {
                let state = store.data_mut();
                if let Err(code) = admit_socket(state) {
                    let refused: Result<Resource<UdpSocket>, _> = Err(code);
                    return Ok((refused,));
                }
                socket_result(
                    udp_create_socket::Host::create_udp_socket(&mut state.sockets(), family).await,
                )
            })
        },
    )?;
    let mut tcp = linker.instance(TCP)?;
    tcp.func_wrap(
        "[method]tcp-socket.finish-connect",
        |mut store: StoreContextMut<'_, HostState>, (socket,): (Resource<TcpSocket>,)| {
            let state = store.data_mut();
            let (table, budget) = state.table_and_budget();
            if let Err(refused) =
                budget.admit(table, 2 * STREAM_BYTES, "a TCP connection's streams")
            {
                let refused: Result<(Resource<DynInputStream>, Resource<DynOutputStream>), _> =
                    Err(socket_refusal(state, refused));
                return Ok((refused,));
            }
            socket_result(HostTcpSocket::finish_connect(&mut state.sockets(), socket))
        },
    )?;
    Ok(())
}
