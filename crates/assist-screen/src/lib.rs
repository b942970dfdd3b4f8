//! The reference clients' screen and input payloads (docs/protocol.md, "Screen and input payloads").
