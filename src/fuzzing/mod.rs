//! Fuzz target bodies (compiled for tests and `cargo fuzz` only).
//!
//! Each `pub fn` here is the whole body of one target in `fuzz/fuzz_targets/`, which only
//! forwards its input. Structure is read out of the input by a small byte `Reader` (reads
//! past the end yield zeros), so every input is a valid test case and no `arbitrary` is needed.
//!
//! | target                                   | feeds                                    | oracle                             |
//! |------------------------------------------|------------------------------------------|------------------------------------|
//! | [`client_frames`](fn@client_frames)      | bytes to `wire::Parser`, in chunks       | tungstenite (server role)          |
//! | [`server_frames`](fn@server_frames)      | opcodes and bodies to the encoders       | tungstenite (client role)          |
//! | [`batch_envelope`](fn@batch_envelope)    | bytes to `envelope::decode`, bodies      | a naive decoder; encode round trip |
//! | [`broker_message`](fn@broker_message)    | bytes as a message from another node     | the bridge's slicing of what passes |
//! | [`handshake`](fn@handshake)              | bytes to `handshake::parse`              | httparse on the responses          |
//! | [`shard_ops`](fn@shard_ops)              | operation sequences to the shard's core  | a model: a list of clients         |
//! | [`deflate_offer`](fn@deflate_offer)      | bytes as `Sec-WebSocket-Extensions`      | a plain reading of RFC 7692        |
//! | [`compressed_frames`](fn@compressed_frames) | compressed messages to `wire::Parser` | a model of the stream; zlib        |
//!
//! Each target lives in the file of its name. Beside them: `reader` (the byte `Reader`),
//! `oracle` (messages as both sides see them, and tungstenite's reading of a stream, shared by
//! the two frame targets) and `model` (the shard model `shard_ops` runs beside the connection core).
//!
//! # Replay
//!
//! The inputs committed under `tests/fuzz_seeds/<target>/` are replayed by this module's tests, so
//! plain `cargo test` (stable) runs every target on them.

mod batch_envelope;
mod broker_message;
mod client_frames;
mod compressed_frames;
mod deflate_offer;
mod handshake;
mod model;
mod oracle;
mod reader;
#[cfg(test)]
mod replay;
mod server_frames;
mod shard_ops;

pub use batch_envelope::batch_envelope;
pub use broker_message::broker_message;
pub use client_frames::client_frames;
pub use compressed_frames::compressed_frames;
pub use deflate_offer::deflate_offer;
pub use handshake::handshake;
pub use server_frames::server_frames;
pub use shard_ops::shard_ops;
