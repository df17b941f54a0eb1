//! The session registry: which gateway holds which device's connection. The logic consults it
//! for every packet it sends a device. An entry is (re-)registered by every packet the device
//! sends through a gateway, moves when the device logs in through another gateway, expires after
//! `expiry_ms` without one, and is dropped when its gateway reports it stale.

use crate::ids::Address;
use crate::time::Time;
use std::collections::BTreeMap;

#[derive(Clone, Debug, Default)]
pub struct Registry {
    routes: BTreeMap<Address, Route>,
    expiry_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    gateway: Address,
    heard: Time,
}

impl Registry {
    /// An empty registry whose entries expire after `expiry_ms` without a packet.
    pub fn new(expiry_ms: u64) -> Registry {
        assert!(expiry_ms > 0, "a route must live for some time");
        Registry {
            routes: BTreeMap::new(),
            expiry_ms,
        }
    }

    /// `device` was heard through `gateway` at `now`. Returns the gateway it was registered at
    /// before when the route moved (a failover), `None` when it is new or unchanged.
    pub fn register(&mut self, device: Address, gateway: Address, now: Time) -> Option<Address> {
        let previous = self.routes.insert(
            device,
            Route {
                gateway,
                heard: now,
            },
        );
        previous
            .map(|route| route.gateway)
            .filter(|previous| *previous != gateway)
    }

    /// The gateway to send `device`'s packets to, unless its route expired or was dropped.
    pub fn route(&self, device: Address, now: Time) -> Option<Address> {
        self.routes
            .get(&device)
            .filter(|route| now.since_ms(route.heard) < self.expiry_ms)
            .map(|route| route.gateway)
    }

    /// `gateway` said it holds no connection of `device`. The route goes only if it still
    /// names that gateway: a newer registration through another gateway stays. True if dropped.
    pub fn forget(&mut self, device: Address, gateway: Address) -> bool {
        let stale = self
            .routes
            .get(&device)
            .is_some_and(|route| route.gateway == gateway);
        if stale {
            self.routes.remove(&device);
        }
        stale
    }

    /// Drops the expired routes; the registry holds at most one route per device heard within
    /// `expiry_ms`.
    pub fn purge(&mut self, now: Time) {
        let expiry_ms = self.expiry_ms;
        self.routes
            .retain(|_, route| now.since_ms(route.heard) < expiry_ms);
    }

    /// Routes held, expired or not: what `purge` frees (for its test; nothing else asks).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.routes.len()
    }
}
