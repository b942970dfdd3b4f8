//! Relay close codes (docs/protocol.md, "Close codes").
//!
//! The same numbers are WebSocket close codes on WSS legs and the connection's application error code on QUIC
//! legs.

/// Why the relay (or a client) closed a leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1000: a client closed its leg normally (the peer then gets [`CloseCode::PeerLeft`]).
    Normal,
    /// 4000: the broker ended the session.
    Ended,
    /// 4001: ticket invalid, expired or for another relay.
    BadTicket,
    /// 4002: ticket replayed, role already joined, or session already ended.
    TicketUsed,
    /// 4003: the other leg did not arrive in time.
    PeerTimeout,
    /// 4004: the other leg disconnected.
    PeerLeft,
    /// 4005: a frame over the relay's maximum frame size.
    FrameTooLarge,
    /// 4006: malformed frame, text message, reserved flag, wrong length, wrong direction of a relay flag.
    ProtocolError,
    /// 4007: the leg stopped reading for 10 s while frames waited.
    SlowConsumer,
    /// 4008: no frame in either direction for the idle timeout.
    Idle,
    /// 4009: the session exceeded its bandwidth limit for 5 s running.
    BandwidthExceeded,
    /// 4010: the node is at its session limit.
    NodeFull,
    /// 4011: the node is draining.
    ShuttingDown,
}

impl CloseCode {
    /// Every close code, in numeric order.
    pub const ALL: [CloseCode; 13] = [
        CloseCode::Normal,
        CloseCode::Ended,
        CloseCode::BadTicket,
        CloseCode::TicketUsed,
        CloseCode::PeerTimeout,
        CloseCode::PeerLeft,
        CloseCode::FrameTooLarge,
        CloseCode::ProtocolError,
        CloseCode::SlowConsumer,
        CloseCode::Idle,
        CloseCode::BandwidthExceeded,
        CloseCode::NodeFull,
        CloseCode::ShuttingDown,
    ];

    /// The numeric code: 1000, or 4000..=4011.
    pub fn code(self) -> u16 {
        match self {
            CloseCode::Normal => 1000,
            CloseCode::Ended => 4000,
            CloseCode::BadTicket => 4001,
            CloseCode::TicketUsed => 4002,
            CloseCode::PeerTimeout => 4003,
            CloseCode::PeerLeft => 4004,
            CloseCode::FrameTooLarge => 4005,
            CloseCode::ProtocolError => 4006,
            CloseCode::SlowConsumer => 4007,
            CloseCode::Idle => 4008,
            CloseCode::BandwidthExceeded => 4009,
            CloseCode::NodeFull => 4010,
            CloseCode::ShuttingDown => 4011,
        }
    }

    /// The camelCase name from the protocol's table (also usable as a close reason or metric label).
    pub fn name(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal",
            CloseCode::Ended => "ended",
            CloseCode::BadTicket => "badTicket",
            CloseCode::TicketUsed => "ticketUsed",
            CloseCode::PeerTimeout => "peerTimeout",
            CloseCode::PeerLeft => "peerLeft",
            CloseCode::FrameTooLarge => "frameTooLarge",
            CloseCode::ProtocolError => "protocolError",
            CloseCode::SlowConsumer => "slowConsumer",
            CloseCode::Idle => "idle",
            CloseCode::BandwidthExceeded => "bandwidthExceeded",
            CloseCode::NodeFull => "nodeFull",
            CloseCode::ShuttingDown => "shuttingDown",
        }
    }

    /// The close code with this number, if the relay protocol defines one.
    pub fn from_code(code: u16) -> Option<Self> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }
}

impl std::fmt::Display for CloseCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_protocol_table() {
        let table: [(u16, &str); 13] = [
            (1000, "normal"),
            (4000, "ended"),
            (4001, "badTicket"),
            (4002, "ticketUsed"),
            (4003, "peerTimeout"),
            (4004, "peerLeft"),
            (4005, "frameTooLarge"),
            (4006, "protocolError"),
            (4007, "slowConsumer"),
            (4008, "idle"),
            (4009, "bandwidthExceeded"),
            (4010, "nodeFull"),
            (4011, "shuttingDown"),
        ];
        for (c, (num, name)) in CloseCode::ALL.into_iter().zip(table) {
            assert_eq!(c.code(), num);
            assert_eq!(c.name(), name);
            assert_eq!(CloseCode::from_code(num), Some(c));
        }
    }

    #[test]
    fn unknown_codes_are_none() {
        for code in [0u16, 999, 1001, 1002, 3999, 4012, 4999, u16::MAX] {
            assert_eq!(CloseCode::from_code(code), None, "{code}");
        }
    }

    #[test]
    fn display_shows_name_and_number() {
        assert_eq!(CloseCode::SlowConsumer.to_string(), "slowConsumer (4007)");
    }
}
