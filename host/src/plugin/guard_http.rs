//! Checks in front of the `wasi:http` imports that make the host hold something for the
//! guest. Each shadows wasmtime-wasi-http's function of the same name, checks, then calls
//! wasmtime-wasi-http's own implementation:
//! - Without a `plugin.sandbox.http` grant no HTTP resource exists: the constructors of
//!   `fields`, `outgoing-request` and `request-options` trap (`host-refused`), naming the
//!   key to add. (A request to a destination no entry grants is refused later, at
//!   `handle`, as `HTTP-request-denied`.)
//! - `fields` (new, from-list, clone), `outgoing-request` and its `body` are admitted
//!   against `plugin.limits.host_memory` (a trap when refused: those calls have no error
//!   the guest could handle).
//! - `handle` admits the request into flight against `plugin.limits.descriptors` (each
//!   request holds a connection) and host memory, answering `connection-limit-reached`
//!   or `internal-error` when refused; and it drops the `request-options` entry that
//!   wasmtime-wasi-http's `handle` leaves in the table (one leaked entry per request).
//! - `outgoing-response` traps: it is for HTTP servers, which a processor is not.

use wasmtime::StoreContextMut;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler;
use wasmtime_wasi_http::p2::bindings::http::types::{
    ErrorCode, HeaderError, HostFields, HostOutgoingRequest as OutgoingRequestHost,
    HostRequestOptions,
};
use wasmtime_wasi_http::p2::body::HostOutgoingBody;
use wasmtime_wasi_http::p2::types::{HostFutureIncomingResponse, HostOutgoingRequest};
use wasmtime_wasi_http::p2::{HttpError, HttpResult};
use wasmtime_wasi_http::{FieldMap, RequestOptions, WasiHttpView};

use super::budget::{
    FIELDS_CHARGE, HostRefused, IN_FLIGHT_BYTES, Limit, STREAM_BYTES, UNSENT_REQUEST_BYTES,
};
use super::guard_wasi::said;
use super::host::HostState;

const HTTP_TYPES: &str = "wasi:http/types@0.2.12";
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.12";

/// A `fields` map (its table entry is paid for by the table's share).
const FIELDS: usize = FIELDS_CHARGE;

/// Replace the checked functions in `linker` (call after adding wasi:http).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    types(linker)?;
    handler(linker)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Trap unless the instance has an HTTP grant.
fn granted(state: &HostState, what: &str) -> wasmtime::Result<()> {
    if state.outbound().grants().http.is_empty() {
        let refused = HostRefused::new(
            Limit::Grant,
            format!(
                "the guest created {what} (wasi:http), but the config grants it no HTTP destination: list the endpoints it may call in plugin.sandbox.http, e.g. `http = [\"https://api.example.com\"]`"
            ),
        );
        return Err(said(state, refused).into());
    }
    Ok(())
}

/// Trap unless `bytes` more fit the instance's host memory.
fn admit(state: &mut HostState, bytes: usize, what: &str) -> wasmtime::Result<()> {
    let (table, budget) = state.table_and_budget();
    budget
        .admit(table, bytes, what)
        .map_err(|refused| said(state, refused).into())
}

fn types(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut types = linker.instance(HTTP_TYPES)?;
    types.func_wrap(
        "[constructor]fields",
        |mut store: StoreContextMut<'_, HostState>, (): ()| {
            let state = store.data_mut();
            granted(state, "HTTP fields")?;
            admit(state, FIELDS, "HTTP fields")?;
            Ok((HostFields::new(&mut state.http())?,))
        },
    )?;
    types.func_wrap(
        "[static]fields.from-list",
        |mut store: StoreContextMut<'_, HostState>, (entries,): (Vec<(String, Vec<u8>)>,)| {
            let state = store.data_mut();
            granted(state, "HTTP fields")?;
            admit(state, FIELDS, "HTTP fields")?;
            let made: Result<Resource<FieldMap>, HeaderError> =
                match HostFields::from_list(&mut state.http(), entries) {
                    Ok(fields) => Ok(fields),
                    Err(e) => Err(e.downcast()?),
                };
            Ok((made,))
        },
    )?;
    types.func_wrap(
        "[method]fields.clone",
        |mut store: StoreContextMut<'_, HostState>, (fields,): (Resource<FieldMap>,)| {
            let state = store.data_mut();
            admit(state, FIELDS, "a copy of HTTP fields")?;
            Ok((HostFields::clone(&mut state.http(), fields)?,))
        },
    )?;
    types.func_wrap(
        "[constructor]outgoing-request",
        |mut store: StoreContextMut<'_, HostState>, (headers,): (Resource<FieldMap>,)| {
            let state = store.data_mut();
            granted(state, "an HTTP request")?;
            // The request takes over the fields it is made from: nothing more is held.
            admit(state, 0, "an HTTP request")?;
            Ok((OutgoingRequestHost::new(&mut state.http(), headers)?,))
        },
    )?;
    types.func_wrap(
        "[method]outgoing-request.body",
        |mut store: StoreContextMut<'_, HostState>,
         (request,): (Resource<HostOutgoingRequest>,)| {
            let state = store.data_mut();
            // The request now holds a body buffer and may get trailers; and the guest
            // writes the body through an output stream.
            let body = UNSENT_REQUEST_BYTES - FIELDS_CHARGE + STREAM_BYTES;
            admit(state, body, "an HTTP request body")?;
            let made: Result<Resource<HostOutgoingBody>, ()> =
                OutgoingRequestHost::body(&mut state.http(), request)?;
            Ok((made,))
        },
    )?;
    types.func_wrap(
        "[constructor]request-options",
        |mut store: StoreContextMut<'_, HostState>, (): ()| {
            let state = store.data_mut();
            granted(state, "HTTP request options")?;
            let made: Resource<RequestOptions> = HostRequestOptions::new(&mut state.http())?;
            Ok((made,))
        },
    )?;
    types.func_wrap(
        "[constructor]outgoing-response",
        |store: StoreContextMut<'_, HostState>, (_headers,): (Resource<FieldMap>,)| {
            let refused = HostRefused::new(
                Limit::Grant,
                "the guest created an HTTP outgoing-response, which only an HTTP server sends; a processor makes requests".into(),
            );
            let never: wasmtime::Result<(Resource<wasmtime_wasi_http::p2::types::HostOutgoingResponse>,)> =
                Err(said(store.data(), refused).into());
            never
        },
    )?;
    Ok(())
}

fn handler(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    let mut handler = linker.instance(OUTGOING_HANDLER)?;
    handler.func_wrap(
        "handle",
        |mut store: StoreContextMut<'_, HostState>,
         (request, options): (
            Resource<HostOutgoingRequest>,
            Option<Resource<RequestOptions>>,
        )| {
            let state = store.data_mut();
            granted(state, "an HTTP request")?;
            let options_rep = options.as_ref().map(Resource::rep);
            let admitted = admit_in_flight(state, &request);
            let sent: HttpResult<Resource<HostFutureIncomingResponse>> = match admitted {
                Ok(()) => outgoing_handler::Host::handle(&mut state.http(), request, options),
                Err(code) => {
                    // Refused: the guest gave the request (and options) away, so the host
                    // drops them.
                    state.table_mut().delete(request)?;
                    Err(HttpError::from(code))
                }
            };
            // wasmtime-wasi-http reads the options and leaves them in the table.
            if let Some(rep) = options_rep {
                let _ = state
                    .table_mut()
                    .delete(Resource::<RequestOptions>::new_own(rep));
            }
            Ok((match sent {
                Ok(future) => Ok(future),
                Err(e) => Err(e.downcast()?),
            },))
        },
    )?;
    Ok(())
}

/// Admit a request into flight: one more connection within `plugin.limits.descriptors`,
/// and what it holds once sent (its body buffer, the connection's buffers) within host
/// memory, counting that the unsent request it replaces goes.
fn admit_in_flight(
    state: &mut HostState,
    request: &Resource<HostOutgoingRequest>,
) -> Result<(), ErrorCode> {
    let (table, budget) = state.table_and_budget();
    let unsent = match table.get(request) {
        Ok(r) if r.body.is_some() => UNSENT_REQUEST_BYTES,
        Ok(_) => FIELDS_CHARGE,
        Err(_) => 0,
    };
    let more = IN_FLIGHT_BYTES.saturating_sub(unsent);
    match budget.admit_descriptor(table, more, "an HTTP request") {
        Ok(()) => Ok(()),
        Err(refused) => {
            let refused = said(state, refused);
            Err(match refused.limit {
                Limit::Descriptors => ErrorCode::ConnectionLimitReached,
                _ => ErrorCode::InternalError(Some(refused.message)),
            })
        }
    }
}
