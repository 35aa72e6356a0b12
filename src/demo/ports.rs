//! The ports `edgewatch demo` binds, all moved by `--port-offset`, and the check
//! that they are free before anything starts: a user's own Prometheus on 9090 gets a
//! message naming the port and the flag, not a bind error from deep inside a role.

use std::net::TcpListener;

/// The aggregator's default ports.
const AGGREGATOR_GRPC: u16 = 14317;
const AGGREGATOR_OTLP_HTTP: u16 = 14318;
const AGGREGATOR_HTTP: u16 = 9090;
/// Collector `i` receives OTLP on these plus `RECEIVER_STEP * i`.
const COLLECTOR_GRPC: u16 = 4317;
const COLLECTOR_HTTP: u16 = 4318;
const RECEIVER_STEP: u16 = 10;
/// Collector `i`'s admin port is this plus `i`.
const COLLECTOR_ADMIN: u16 = 9464;

/// Offsets tried for a suggestion when a port is busy.
const SUGGESTED_OFFSETS: [u16; 6] = [10000, 20000, 30000, 40000, 1000, 2000];

/// The demo's ports shifted by the user's `--port-offset`.
#[derive(Clone, Copy, Debug)]
pub struct Ports {
    offset: u16,
    collectors: u16,
}

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("--port-offset {offset} puts the demo's highest port past 65535: use at most {max}")]
    TooLarge { offset: u16, max: u16 },
    #[error("port {port} ({what}) is already in use on 127.0.0.1: move every port of the demo with --port-offset N{suggestion}")]
    Busy {
        port: u16,
        what: String,
        suggestion: String,
    },
}

impl Ports {
    /// The ports of an aggregator and `collectors` collectors, shifted by `offset`.
    pub fn new(offset: u16, collectors: u16) -> Result<Self, PortError> {
        let ports = Ports { offset, collectors };
        let highest = ports.defaults().map(|(p, _)| p).max().unwrap_or(0);
        if highest.checked_add(offset).is_none() {
            return Err(PortError::TooLarge {
                offset,
                max: u16::MAX - highest,
            });
        }
        Ok(ports)
    }

    pub fn aggregator_grpc(&self) -> u16 {
        AGGREGATOR_GRPC + self.offset
    }

    pub fn aggregator_otlp_http(&self) -> u16 {
        AGGREGATOR_OTLP_HTTP + self.offset
    }

    pub fn aggregator_http(&self) -> u16 {
        AGGREGATOR_HTTP + self.offset
    }

    pub fn collector_grpc(&self, i: u16) -> u16 {
        COLLECTOR_GRPC + RECEIVER_STEP * i + self.offset
    }

    pub fn collector_otlp_http(&self, i: u16) -> u16 {
        COLLECTOR_HTTP + RECEIVER_STEP * i + self.offset
    }

    pub fn collector_admin(&self, i: u16) -> u16 {
        COLLECTOR_ADMIN + i + self.offset
    }

    /// Every unshifted port with what binds it.
    fn defaults(&self) -> impl Iterator<Item = (u16, String)> {
        let aggregator = [
            (AGGREGATOR_HTTP, "aggregator HTTP".to_string()),
            (AGGREGATOR_GRPC, "aggregator OTLP gRPC".into()),
            (AGGREGATOR_OTLP_HTTP, "aggregator OTLP HTTP".into()),
        ];
        let collectors = (0..self.collectors).flat_map(|i| {
            [
                (
                    COLLECTOR_GRPC + RECEIVER_STEP * i,
                    format!("collector {} OTLP gRPC", i + 1),
                ),
                (
                    COLLECTOR_HTTP + RECEIVER_STEP * i,
                    format!("collector {} OTLP HTTP", i + 1),
                ),
                (COLLECTOR_ADMIN + i, format!("collector {} admin", i + 1)),
            ]
        });
        aggregator.into_iter().chain(collectors)
    }

    /// The first port another process holds, with what the demo binds there.
    fn first_busy(&self) -> Option<(u16, String)> {
        self.defaults()
            .map(|(p, what)| (p + self.offset, what))
            .find(|(port, _)| TcpListener::bind(("127.0.0.1", *port)).is_err())
    }

    /// Fails naming the first busy port, and an offset whose ports are all free now.
    /// (Another process may take a port between this check and the bind: then the
    /// role's own bind error says which.)
    pub fn check_free(&self) -> Result<(), PortError> {
        let Some((port, what)) = self.first_busy() else {
            return Ok(());
        };
        let free = SUGGESTED_OFFSETS.iter().find(|&&offset| {
            offset != self.offset
                && Ports::new(offset, self.collectors).is_ok_and(|p| p.first_busy().is_none())
        });
        Err(PortError::Busy {
            port,
            what,
            suggestion: free
                .map(|o| format!(" (--port-offset {o} has every port free now)"))
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_shift_every_port_and_stay_in_range() {
        let p = Ports::new(100, 3).unwrap();
        assert_eq!(p.aggregator_http(), 9190);
        assert_eq!(p.aggregator_grpc(), 14417);
        assert_eq!(p.collector_grpc(2), 4437);
        assert_eq!(p.collector_admin(2), 9566);
        assert_eq!(p.defaults().count(), 12);
        let e = Ports::new(60000, 3).unwrap_err().to_string();
        assert_eq!(
            e,
            "--port-offset 60000 puts the demo's highest port past 65535: use at most 51217"
        );
        assert!(Ports::new(51217, 3).is_ok());
    }
}
