//! An owned message, so that ours ([`Inbound`]) and tungstenite's can be collected and
//! compared: what the fuzz targets' oracle and the wire tests (`tests/wire.rs`) compare.
//!
//! One file for both crates. `tests/wire.rs` cannot reach `shardcast::fuzzing` (built only for
//! the crate's own tests and for `cargo fuzz`, where tungstenite is a dependency of the
//! library), so it includes this file with `#[path]`. The file names only what both
//! includers have: `super::Inbound` (each imports it) and the `tungstenite` crate.

use super::Inbound;

/// A message as ours or tungstenite's parser read it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Msg {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<u16>, String),
}

impl From<Inbound<'_>> for Msg {
    fn from(m: Inbound<'_>) -> Msg {
        match m {
            Inbound::Text(t) => Msg::Text(t.to_owned()),
            Inbound::Binary(b) => Msg::Binary(b.to_vec()),
            Inbound::Ping(b) => Msg::Ping(b.to_vec()),
            Inbound::Pong(b) => Msg::Pong(b.to_vec()),
            Inbound::Close { code, reason } => Msg::Close(code, reason.to_owned()),
        }
    }
}

impl From<tungstenite::Message> for Msg {
    fn from(m: tungstenite::Message) -> Msg {
        use tungstenite::Message as M;
        match m {
            M::Text(t) => Msg::Text(t.as_str().to_owned()),
            M::Binary(b) => Msg::Binary(b.to_vec()),
            M::Ping(b) => Msg::Ping(b.to_vec()),
            M::Pong(b) => Msg::Pong(b.to_vec()),
            M::Close(None) => Msg::Close(None, String::new()),
            M::Close(Some(c)) => Msg::Close(Some(c.code.into()), c.reason.as_str().to_owned()),
            M::Frame(_) => panic!("tungstenite never reads raw frames"),
        }
    }
}
