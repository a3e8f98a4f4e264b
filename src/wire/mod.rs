//! Wire format: frame encoder, incremental frame parser, batch envelope and handshake.
//!
//! Everything here is pure: no I/O, no async, no clocks. Each function takes bytes and returns
//! bytes or a decision, so it can be unit-tested, fuzzed and checked against tungstenite.
//!
//! # Invariants
//!
//! - Peer-controlled input never panics. What the parser holds, and its buffer's capacity, are
//!   bounded by the configured message limit plus one control frame; the buffer grows as bytes
//!   arrive, never past the end of the message a final frame announces.
//! - Server frames are always final (FIN) and unmasked; client frames must be masked.

pub mod deflate;
pub mod envelope;
pub mod frame;
pub mod handshake;
pub mod parser;
mod utf8;

pub use frame::Opcode;
pub use parser::{Inbound, Limits, ParseError, Parser};
