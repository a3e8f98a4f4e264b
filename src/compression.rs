//! `Compression`: the permessage-deflate settings, shared by the config and the payloads
//! that are compressed as they say.

/// permessage-deflate (RFC 7692): whether clients' offers are accepted, and which messages
/// are compressed.
///
/// Every browser offers it. A broadcast is compressed once, whatever the number of its
/// recipients, by the thread that publishes it (`Engine::broadcast`, a handler's
/// [`Context::broadcast`](crate::Context::broadcast), the bridge's thread for what other
/// nodes publish), and only while some client of the engine negotiated it; each recipient
/// then gets a refcount of the frame it negotiated, compressed or plain. A message sent to
/// one client is compressed for it by its shard. Each message is compressed on its own
/// (`server_no_context_takeover`), and clients are asked to do the same
/// (`client_no_context_takeover`), so no connection holds a compressor or an inflater: a
/// shard has one inflater, and each publishing thread one compressor per window size.
///
/// ```
/// use shardcast::{Compression, Engine};
/// let engine = Engine::builder()
///     .compression(Compression::default().min_bytes(1024).level(6))
///     .build()?;
/// assert!(engine.config().compression.enabled);
/// let plain = Engine::builder().compression(Compression::OFF).build()?;
/// assert!(!plain.config().compression.enabled);
/// # Ok::<(), shardcast::BuildError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Compression {
    /// Accept clients' permessage-deflate offers. Default: on.
    pub enabled: bool,
    /// Messages shorter than this go out uncompressed (so do messages whose compressed frame
    /// is not smaller). Default: 256 bytes.
    pub min_bytes: usize,
    /// zlib compression level, 1 (fastest) to 9 (smallest). Default: 6.
    pub level: u32,
}

impl Compression {
    /// Offers are declined: every client gets plain frames.
    pub const OFF: Compression = Compression {
        enabled: false,
        min_bytes: 256,
        level: 6,
    };

    /// The same, with messages shorter than `bytes` left uncompressed.
    pub fn min_bytes(mut self, bytes: usize) -> Compression {
        self.min_bytes = bytes;
        self
    }

    /// The same, at zlib level `level` (1-9).
    pub fn level(mut self, level: u32) -> Compression {
        self.level = level;
        self
    }
}

impl Default for Compression {
    fn default() -> Compression {
        Compression {
            enabled: true,
            ..Compression::OFF
        }
    }
}
