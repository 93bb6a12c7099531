//! Who may hold what on the DIMSE listeners, so that connections which never finish an
//! A-ASSOCIATE-RQ cannot lock real peers out.
//!
//! A connection is first *pending*: from TCP accept until its A-ASSOCIATE-RQ has been read
//! and answered. A pending connection
//! - is closed when its ARTIM deadline passes (`dimse.artim_secs`, PS3.8 9.1.5 and the
//!   state machine's AE-5/AE-6 "start ARTIM" in 9.2.3): one deadline for the whole request,
//!   counted from accept (a DICOM TLS handshake included), so a peer trickling one byte a
//!   second cannot extend it;
//! - holds no association slot;
//! - counts against `dimse.max_pending` (all addresses) and `dimse.max_pending_per_address`.
//!   Beyond either the *oldest* pending connection (of that address, or overall) is closed
//!   and the new one kept: a real peer sends its request within milliseconds of connecting,
//!   so the oldest are the idle ones, and a flood never keeps a real peer out.
//!
//! Once the request is in and admitted, the connection is an *association*: it holds one of
//! `dimse.max_associations` slots and one of its address's `dimse.max_associations_per_address`
//! (beyond either: A-ASSOCIATE-RJ transient, local limit exceeded, PS3.8 Table 9-21), until
//! it ends.
//!
//! Addresses are compared as IP addresses (an IPv4-mapped IPv6 address as the IPv4 one).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The limits, from `[dimse]`.
#[derive(Debug, Clone)]
pub(super) struct Limits {
    pub artim: Duration,
    pub max_pending: usize,
    pub max_pending_per_address: usize,
    pub max_associations: usize,
    pub max_associations_per_address: usize,
}

impl Limits {
    pub fn of(dimse: &crate::config::DimseConfig) -> Limits {
        Limits {
            artim: Duration::from_secs(dimse.artim_secs),
            max_pending: dimse.max_pending,
            max_pending_per_address: dimse.max_pending_per_address,
            max_associations: dimse.max_associations,
            max_associations_per_address: dimse.max_associations_per_address,
        }
    }
}

/// The bookkeeping shared by the plain and the DICOM TLS listener.
#[derive(Debug)]
pub(super) struct Admission {
    limits: Limits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Pending connections by id; ids only grow, so the first entry is the oldest.
    pending: BTreeMap<u64, PendingEntry>,
    pending_per_address: HashMap<IpAddr, usize>,
    associations: usize,
    associations_per_address: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct PendingEntry {
    peer: SocketAddr,
    close: CancellationToken,
}

/// Why a pending connection must be closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Closed {
    /// No A-ASSOCIATE-RQ (or TLS handshake and request) within the ARTIM time.
    Artim,
    /// Pushed out by newer pending connections (`max_pending`, `max_pending_per_address`).
    Displaced,
}

/// Why an A-ASSOCIATE-RQ gets no association slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Full {
    /// All `max_associations` slots are taken.
    Listener(usize),
    /// This address already holds `max_associations_per_address`.
    Address(usize),
}

fn address(peer: &SocketAddr) -> IpAddr {
    peer.ip().to_canonical()
}

fn decrement(counts: &mut HashMap<IpAddr, usize>, ip: &IpAddr) {
    if let Some(n) = counts.get_mut(ip) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            counts.remove(ip);
        }
    }
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        Arc::new(Admission {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is counters only; a panic elsewhere while holding the lock cannot leave
        // it half-updated in a way worse than a miscount, so carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A connection was accepted: it is pending (with its ARTIM deadline from now) until
    /// [`Pending::admit`] or until it is dropped. May close older pending connections.
    pub fn pending(self: &Arc<Self>, peer: SocketAddr) -> Pending {
        let ip = address(&peer);
        let close = CancellationToken::new();
        let mut state = self.state();
        state.next_id += 1;
        let id = state.next_id;
        state.pending.insert(
            id,
            PendingEntry {
                peer,
                close: close.clone(),
            },
        );
        let from_address = state.pending_per_address.entry(ip).or_default();
        *from_address += 1;
        if *from_address > self.limits.max_pending_per_address {
            let oldest = state
                .pending
                .iter()
                .find(|(_, e)| address(&e.peer) == ip)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                self.displace(&mut state, oldest, "dimse.max_pending_per_address");
            }
        }
        if state.pending.len() > self.limits.max_pending {
            if let Some(oldest) = state.pending.keys().next().copied() {
                self.displace(&mut state, oldest, "dimse.max_pending");
            }
        }
        Pending {
            admission: self.clone(),
            id,
            peer,
            close,
            deadline: Instant::now() + self.limits.artim,
        }
    }

    fn displace(&self, state: &mut State, id: u64, limit: &str) {
        if let Some(entry) = state.pending.remove(&id) {
            decrement(&mut state.pending_per_address, &address(&entry.peer));
            tracing::info!(
                peer = %entry.peer,
                limit,
                "half-open DIMSE connection closed to make room for a newer one"
            );
            entry.close.cancel();
        }
    }

    fn leave_pending(&self, state: &mut State, id: u64) {
        if let Some(entry) = state.pending.remove(&id) {
            decrement(&mut state.pending_per_address, &address(&entry.peer));
        }
    }

    /// How many connections are pending, and how many associations run.
    #[cfg(test)]
    fn counts(&self) -> (usize, usize) {
        let state = self.state();
        (state.pending.len(), state.associations)
    }
}

/// A connection that has not yet completed its A-ASSOCIATE-RQ.
#[derive(Debug)]
pub(super) struct Pending {
    admission: Arc<Admission>,
    id: u64,
    peer: SocketAddr,
    close: CancellationToken,
    deadline: Instant,
}

impl Pending {
    /// Completes when this connection must be closed.
    pub async fn closed(&self) -> Closed {
        tokio::select! {
            _ = self.close.cancelled() => Closed::Displaced,
            _ = tokio::time::sleep_until(self.deadline) => Closed::Artim,
        }
    }

    /// The A-ASSOCIATE-RQ is in and acceptable: take an association slot. The connection
    /// stops being pending either way (it is answered next).
    pub fn admit(&self) -> Result<Slot, Full> {
        let limits = &self.admission.limits;
        let ip = address(&self.peer);
        let mut state = self.admission.state();
        self.admission.leave_pending(&mut state, self.id);
        if state.associations >= limits.max_associations {
            return Err(Full::Listener(limits.max_associations));
        }
        let from_address = state.associations_per_address.get(&ip).copied();
        if from_address.unwrap_or(0) >= limits.max_associations_per_address {
            return Err(Full::Address(limits.max_associations_per_address));
        }
        *state.associations_per_address.entry(ip).or_default() += 1;
        state.associations += 1;
        Ok(Slot {
            admission: self.admission.clone(),
            ip,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        self.admission.leave_pending(&mut state, self.id);
    }
}

/// One association slot, given back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut state = self.admission.state();
        state.associations = state.associations.saturating_sub(1);
        decrement(&mut state.associations_per_address, &self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            artim: Duration::from_secs(10),
            max_pending: 4,
            max_pending_per_address: 2,
            max_associations: 3,
            max_associations_per_address: 2,
        }
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[tokio::test]
    async fn the_oldest_pending_of_an_address_makes_room() {
        let admission = Admission::new(limits());
        let first = admission.pending(addr("10.0.0.1:1000"));
        let second = admission.pending(addr("10.0.0.1:1001"));
        let other = admission.pending(addr("10.0.0.2:1000"));
        assert!(!first.close.is_cancelled());
        let third = admission.pending(addr("[::ffff:10.0.0.1]:1002"));
        assert_eq!(first.closed().await, Closed::Displaced);
        assert!(!second.close.is_cancelled() && !third.close.is_cancelled());
        assert!(!other.close.is_cancelled());
        assert_eq!(admission.counts(), (3, 0));
        drop(first);
        assert_eq!(admission.counts(), (3, 0));
    }

    #[tokio::test]
    async fn the_oldest_pending_overall_makes_room() {
        let admission = Admission::new(limits());
        let held: Vec<_> = (1..=5)
            .map(|i| admission.pending(addr(&format!("10.0.0.{i}:1000"))))
            .collect();
        assert!(held[0].close.is_cancelled());
        assert!(held[1..].iter().all(|p| !p.close.is_cancelled()));
        assert_eq!(admission.counts(), (4, 0));
        drop(held);
        assert_eq!(admission.counts(), (0, 0));
    }

    #[tokio::test]
    async fn slots_are_limited_overall_and_per_address() {
        let admission = Admission::new(limits());
        let a1 = admission.pending(addr("10.0.0.1:1")).admit().unwrap();
        let a2 = admission.pending(addr("10.0.0.1:2")).admit().unwrap();
        assert_eq!(
            admission.pending(addr("10.0.0.1:3")).admit().unwrap_err(),
            Full::Address(2)
        );
        let b1 = admission.pending(addr("10.0.0.2:1")).admit().unwrap();
        assert_eq!(
            admission.pending(addr("10.0.0.3:1")).admit().unwrap_err(),
            Full::Listener(3)
        );
        assert_eq!(admission.counts(), (0, 3));
        drop(a1);
        let a3 = admission.pending(addr("10.0.0.1:4")).admit().unwrap();
        drop((a2, a3, b1));
        assert_eq!(admission.counts(), (0, 0));
        assert!(admission.state().associations_per_address.is_empty());
    }

    #[tokio::test]
    async fn artim_is_one_deadline_from_accept() {
        let artim = Duration::from_millis(300);
        let admission = Admission::new(Limits { artim, ..limits() });
        let started = Instant::now();
        let pending = admission.pending(addr("10.0.0.1:1"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Asking again does not restart the clock.
        assert_eq!(pending.closed().await, Closed::Artim);
        let took = started.elapsed();
        assert!(took >= artim && took < artim * 2, "{took:?}");
    }
}
