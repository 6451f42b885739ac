//! shoal's own `wasi:sockets/ip-name-lookup`, linked over wasmtime-wasi's (which can only
//! switch lookup on or off): a guest resolves only names its grants cover, on the lookup
//! threads of [`super::resolver`] (bounded per instance, with a timeout), and every
//! address a lookup returns is remembered so a connect to it is judged by that name.

use std::net::IpAddr;
use std::task::{Context, Poll};

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Network, Pollable, subscribe};
use wasmtime_wasi::runtime::AbortOnDropJoinHandle;

use super::host::HostState;
use super::resolver::{LOOKUP_TIMEOUT, LookupError};

/// The interface as wasmtime-wasi 48 defines it; guests importing any 0.2.x version
/// are linked to it by semver.
const INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// One `resolve-address-stream`: a lookup in flight, then its addresses one by one.
pub struct NameLookup {
    state: LookupState,
}

enum LookupState {
    Pending(AbortOnDropJoinHandle<Result<Vec<IpAddr>, ErrorCode>>),
    Done(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

impl NameLookup {
    fn ready(addresses: Vec<IpAddr>) -> Self {
        Self {
            state: LookupState::Done(Ok(addresses.into_iter())),
        }
    }

    /// Move a finished lookup to `Done`; `Pending` if it is still running.
    fn poll_done(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if let LookupState::Pending(handle) = &mut self.state {
            match std::pin::Pin::new(handle).poll(cx) {
                Poll::Ready(result) => self.state = LookupState::Done(result.map(Vec::into_iter)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for NameLookup {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.poll_done(cx)).await;
    }
}

/// Replace wasmtime-wasi's `ip-name-lookup` in `linker` (call after adding WASI).
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut interface = linker.instance(INTERFACE)?;
    interface.resource(
        "resolve-address-stream",
        ResourceType::host::<NameLookup>(),
        |mut store, rep| {
            store
                .data_mut()
                .table_mut()
                .delete(Resource::<NameLookup>::new_own(rep))?;
            Ok(())
        },
    )?;
    interface.func_wrap(
        "resolve-addresses",
        |mut store, (network, name): (Resource<Network>, String)| {
            let state = store.data_mut();
            state.table_mut().get(&network)?;
            let lookup = match start_lookup(state, name) {
                Ok(lookup) => lookup,
                Err(code) => return Ok((Err(code),)),
            };
            Ok((Ok(state.table_mut().push(lookup)?),))
        },
    )?;
    interface.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        |mut store, (this,): (Resource<NameLookup>,)| {
            let lookup = store.data_mut().table_mut().get_mut(&this)?;
            let mut cx = Context::from_waker(std::task::Waker::noop());
            if lookup.poll_done(&mut cx).is_pending() {
                return Ok((Err(ErrorCode::WouldBlock),));
            }
            let next: Result<Option<IpAddress>, ErrorCode> = match &mut lookup.state {
                LookupState::Done(Ok(addresses)) => Ok(addresses.next().map(IpAddress::from)),
                LookupState::Done(Err(code)) => Err(*code),
                LookupState::Pending(_) => Err(ErrorCode::WouldBlock),
            };
            Ok((next,))
        },
    )?;
    interface.func_wrap(
        "[method]resolve-address-stream.subscribe",
        |mut store, (this,): (Resource<NameLookup>,)| {
            let pollable: Resource<DynPollable> = subscribe(store.data_mut().table_mut(), this)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Check the name against the grants and start resolving it. IP literals resolve to
/// themselves without a query (as in wasmtime-wasi).
fn start_lookup(state: &HostState, name: String) -> Result<NameLookup, ErrorCode> {
    if let Some(ip) = ip_literal(&name) {
        return Ok(NameLookup::ready(vec![ip]));
    }
    let outbound = state.outbound().clone();
    let normal = match outbound.grants().may_look_up(&name) {
        Ok(normal) => normal,
        Err(refusal) => {
            outbound.log_refusal(&refusal);
            return Err(ErrorCode::AccessDenied);
        }
    };
    let handle = wasmtime_wasi::runtime::spawn(async move {
        let addresses = outbound
            .resolve(&normal, LOOKUP_TIMEOUT)
            .await
            .map_err(|e| {
                tracing::debug!("name lookup of `{normal}` failed: {e}");
                match e {
                    LookupError::Failed(_) => ErrorCode::NameUnresolvable,
                    LookupError::TimedOut(_) | LookupError::Unavailable => {
                        ErrorCode::TemporaryResolverFailure
                    }
                }
            })?;
        outbound.record_lookup(&normal, &addresses);
        Ok(addresses)
    });
    Ok(NameLookup {
        state: LookupState::Pending(handle),
    })
}

fn ip_literal(name: &str) -> Option<IpAddr> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    bare.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}
