//! The count of open connections, in total and per source address, and the caps on both.
//!
//! **Invariant:** a count goes up only with a [`Slot`] and down only when it is dropped, so an
//! address with no open connection has no entry, and a flood of distinct addresses costs
//! memory only while their connections are open.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use super::Limits;

/// The accounting of open connections, shared by the accept loop and every [`Slot`].
#[derive(Debug)]
pub(super) struct Table {
    pub(super) limits: Limits,
    open: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Open connections per address key; an entry is removed at zero, so the map holds only
    /// addresses with an open connection.
    per_address: HashMap<IpAddr, PerAddress>,
    /// The total cap was hit and said so; cleared once below it again.
    total_warned: bool,
}

#[derive(Debug, Default)]
struct PerAddress {
    open: usize,
    warned: bool,
}

/// Why a connection was refused.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    Total,
    Address,
}

/// One open connection's place in the [`Table`]; gives it back when dropped.
#[derive(Debug)]
pub(super) struct Slot {
    table: Arc<Table>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if open.total < self.table.limits.max_connections {
            open.total_warned = false;
        }
        if let Some(entry) = open.per_address.get_mut(&self.key) {
            entry.open -= 1;
            if entry.open == 0 {
                open.per_address.remove(&self.key);
            } else if entry.open < self.table.limits.max_per_address {
                entry.warned = false;
            }
        }
    }
}

/// The address a per-address cap counts: IPv4 as is, IPv6 by its /64 (one subscriber's
/// network), an IPv4-mapped IPv6 address as the IPv4 address.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

impl Table {
    /// An empty table enforcing `limits`.
    pub(super) fn new(limits: Limits) -> Self {
        Table {
            limits,
            open: Mutex::new(Counts::default()),
        }
    }

    /// Takes a slot for a connection from `ip`, or says which cap it is over. Logs a refusal
    /// once per episode (until the count drops below the cap again), never per connection.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refusal> {
        let key = address_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.limits.max_connections {
            if !open.total_warned {
                open.total_warned = true;
                tracing::warn!(
                    limit = self.limits.max_connections,
                    "the server has as many connections open as --max-connections allows; \
                     refusing new ones until some close"
                );
            }
            return Err(Refusal::Total);
        }
        let entry = open.per_address.entry(key).or_default();
        if entry.open >= self.limits.max_per_address {
            if !entry.warned {
                entry.warned = true;
                tracing::warn!(
                    address = %key,
                    limit = self.limits.max_per_address,
                    "an address has as many connections open as --max-connections-per-address \
                     allows; refusing more from it until some close"
                );
            }
            return Err(Refusal::Address);
        }
        entry.open += 1;
        open.total += 1;
        Ok(Slot {
            table: self.clone(),
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn table(total: usize, per_address: usize) -> Arc<Table> {
        Arc::new(Table {
            limits: Limits {
                max_connections: total,
                max_per_address: per_address,
                handshake_timeout: Duration::from_secs(1),
                login_timeout: Duration::from_secs(1),
            },
            open: Mutex::new(Counts::default()),
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let t = table(3, 2);
        let a1 = t.admit(ip("10.0.0.1")).unwrap();
        let _a2 = t.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(t.admit(ip("10.0.0.1")).unwrap_err(), Refusal::Address);
        let _b = t.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(t.admit(ip("10.0.0.3")).unwrap_err(), Refusal::Total);
        drop(a1);
        // Both counts were given back.
        let _a3 = t.admit(ip("10.0.0.1")).unwrap();
        assert_eq!(t.admit(ip("10.0.0.3")).unwrap_err(), Refusal::Total);
    }

    #[test]
    fn closed_connections_leave_no_trace_in_the_table() {
        let t = table(10, 10);
        let slots: Vec<_> = (1..=5)
            .map(|n| t.admit(ip(&format!("10.0.0.{n}"))).unwrap())
            .collect();
        drop(slots);
        let open = t.open.lock().unwrap();
        assert_eq!(open.total, 0);
        assert!(open.per_address.is_empty());
    }

    #[test]
    fn ipv6_is_counted_per_64_and_mapped_ipv4_as_ipv4() {
        let t = table(10, 1);
        let _a = t.admit(ip("2001:db8:1:2::1")).unwrap();
        assert_eq!(
            t.admit(ip("2001:db8:1:2:ffff::9")).unwrap_err(),
            Refusal::Address
        );
        let _b = t.admit(ip("2001:db8:1:3::1")).unwrap();
        let _c = t.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            t.admit(ip("::ffff:192.0.2.1")).unwrap_err(),
            Refusal::Address
        );
    }
}
