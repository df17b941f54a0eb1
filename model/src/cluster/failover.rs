//! A device's side of the cluster: which gateway it talks to, and when it moves to another.
//! The client itself knows nothing of gateways (it talks to "the server"); the driver asks this
//! machine where each packet goes and whether a packet that came in speaks for the server.
//!
//! The first gateway is chosen from the device id (`device mod gateways`), so devices spread
//! evenly and a run replays. The device fails over to the next gateway in turn when it lost its
//! session (silence, or the gateway answered `NotLoggedIn` after a restart) or when a login went
//! unanswered: both say the gateway, or the path through it, is gone.

use super::{gateway_address, gateway_of};
use crate::event::{Event, SessionEnd};
use crate::ids::Address;
use crate::wire::Packet;

#[derive(Clone, Debug)]
pub struct Failover {
    gateways: u32,
    current: u32,
    /// A login went to `current` and no answer came yet.
    login_unanswered: bool,
    /// The session ended for a reason other than logout: the next login goes elsewhere.
    lost: bool,
}

impl Failover {
    /// A device numbered `device_number` among `gateways` gateways.
    pub fn new(device_number: u32, gateways: u32) -> Failover {
        assert!(gateways > 0, "a cluster has at least one gateway");
        Failover {
            gateways,
            current: device_number % gateways,
            login_unanswered: false,
            lost: false,
        }
    }

    // ---- getters ----

    /// The address of the gateway the device is connected to (or connecting to).
    pub fn gateway_address(&self) -> Address {
        gateway_address(self.current)
    }

    // ---- inputs ----

    /// The client sends `packet`: where it goes, and the failover it caused, if any.
    pub fn handle_outgoing(&mut self, packet: &Packet) -> (Address, Option<Event>) {
        let mut failed_over = None;
        if matches!(packet, Packet::Login { .. }) {
            if (self.login_unanswered || self.lost) && self.gateways > 1 {
                let from_gateway = self.current;
                self.current = (self.current + 1) % self.gateways;
                failed_over = Some(Event::FailedOver {
                    from_gateway,
                    to_gateway: self.current,
                });
            }
            self.login_unanswered = true;
            self.lost = false;
        }
        (self.gateway_address(), failed_over)
    }

    /// A packet came in from `from`: true if the client should see it. Any gateway speaks for
    /// the server: a device that failed over away from a gateway that is still up keeps that
    /// connection until the gateway drops it, and the registry may still route through it (a
    /// late login or heartbeat sent there re-registers the old route). Dropping those packets
    /// lost pushes the logic had every reason to think delivered (seen: seeds 1411 and 1704 of
    /// `cluster-failover`, where T1 fired on the correct protocol).
    pub fn handle_incoming(&mut self, from: Address, packet: &Packet) -> bool {
        if gateway_of(from).is_none() {
            return false;
        }
        if matches!(packet, Packet::LoginOk { .. }) {
            self.login_unanswered = false;
        }
        true
    }

    /// The client reported an event; a lost session makes the next login fail over.
    pub fn handle_event(&mut self, event: &Event) {
        if let Event::SessionLost { reason } = event {
            if *reason != SessionEnd::Logout {
                self.lost = true;
            }
        }
    }
}
