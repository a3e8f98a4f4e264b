//! What the engine knows about one client: its principal, its data, a snapshot, and why it
//! left.

use crate::ClientId;
use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A public newtype over any embedder value shared by reference count, with `new`,
/// `downcast_ref` and a `Debug` that shows only its name: [`Principal`] and [`ClientData`],
/// which differ in meaning, not in behaviour.
macro_rules! any_value {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name(Arc<dyn Any + Send + Sync>);

        impl $name {
            /// Wraps `value`.
            pub fn new<T: Any + Send + Sync>(value: T) -> $name {
                $name(Arc::new(value))
            }

            /// The value, if it is a `T`.
            pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
                self.0.downcast_ref::<T>()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(concat!(stringify!($name), "(..)"))
            }
        }
    };
}

any_value! {
    /// Who an authenticated client is: any value the embedder chooses, shared by reference
    /// count.
    ///
    /// ```
    /// # use shardcast::Principal;
    /// let p = Principal::new(String::from("alice"));
    /// assert_eq!(p.downcast_ref::<String>().map(String::as_str), Some("alice"));
    /// assert!(p.downcast_ref::<u32>().is_none());
    /// ```
    Principal
}

any_value! {
    /// What the embedder attaches to one connection, apart from who it is ([`Principal`]): a
    /// room, a tenant, what the upgrade request said. Any value, shared by reference count; set
    /// by [`Decision::with_data`](crate::Decision::with_data) or
    /// [`Registration::data`](crate::Registration::data), read with
    /// [`Context::data`](crate::Context::data) in every hook and in [`ClientInfo::data`].
    ///
    /// ```
    /// # use shardcast::ClientData;
    /// struct Room(&'static str);
    /// let data = ClientData::new(Room("lobby"));
    /// assert_eq!(data.downcast_ref::<Room>().map(|r| r.0), Some("lobby"));
    /// assert!(data.downcast_ref::<String>().is_none());
    /// ```
    ClientData
}

/// A snapshot of one registered client, from [`crate::Engine::client`] or
/// [`crate::Engine::remove`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client.
    pub id: ClientId,
    /// Who it is, once authenticated.
    pub principal: Option<Principal>,
    /// Whether [`crate::Engine::set_authenticated`] marked it.
    pub authenticated: bool,
    /// What the embedder attached to it ([`ClientData`]), if anything.
    pub data: Option<ClientData>,
    /// Time since its last inbound frame (or registration, or `update_last_ping`).
    pub idle: Duration,
    /// Bytes waiting in its outbound queue.
    pub queued_bytes: usize,
    /// The topics it is subscribed to, sorted by name.
    pub topics: Vec<crate::Topic>,
}

/// Why a registered client left. Passed to [`crate::Handler::on_removed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RemoveReason {
    /// The embedder called [`crate::Engine::remove`] (close 1000 sent).
    Removed,
    /// The client sent a close frame with this code (none: empty close frame).
    ClientClosed(Option<u16>),
    /// The connection ended without a close frame (EOF or I/O error).
    Disconnected,
    /// Its outbound queue overflowed under [`crate::SlowConsumerPolicy::Disconnect`] (close
    /// 4008).
    SlowConsumer,
    /// Its socket accepted no byte for [`crate::Config::write_deadline`].
    WriteDeadline,
    /// Silent for longer than [`crate::Config::heartbeat_timeout`] (close 4002).
    HeartbeatTimeout,
    /// Not authenticated within [`crate::Config::auth_deadline`] (close 4001).
    AuthDeadline,
    /// It broke the protocol; closed with this RFC 6455 code (1002, 1007 or 1009).
    Protocol(u16),
    /// The embedder's handler closed it with this code.
    Closed(u16),
    /// The engine shut down (close 1001).
    Shutdown,
}

impl RemoveReason {
    /// The close code the engine sends for this reason, if it sends one.
    pub fn close_code(self) -> Option<u16> {
        match self {
            RemoveReason::Removed => Some(close_code::NORMAL),
            RemoveReason::ClientClosed(_) | RemoveReason::Disconnected => None,
            RemoveReason::WriteDeadline => None,
            RemoveReason::SlowConsumer => Some(close_code::SLOW_CONSUMER),
            RemoveReason::HeartbeatTimeout => Some(close_code::HEARTBEAT_TIMEOUT),
            RemoveReason::AuthDeadline => Some(close_code::AUTH_DEADLINE),
            RemoveReason::Protocol(code) | RemoveReason::Closed(code) => Some(code),
            RemoveReason::Shutdown => Some(close_code::GOING_AWAY),
        }
    }
}

/// The close codes shardcast sends.
pub mod close_code {
    /// Normal closure (RFC 6455).
    pub const NORMAL: u16 = 1000;
    /// The server is going away (shutdown).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error (RFC 6455).
    pub const PROTOCOL: u16 = 1002;
    /// Invalid UTF-8 in a text message (RFC 6455).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// The message broke the application's rules (RFC 6455 "policy violation").
    pub const POLICY: u16 = 1008;
    /// Message too big (RFC 6455).
    pub const TOO_BIG: u16 = 1009;
    /// Not authenticated before the auth deadline.
    pub const AUTH_DEADLINE: u16 = 4001;
    /// No inbound frame within the heartbeat timeout.
    pub const HEARTBEAT_TIMEOUT: u16 = 4002;
    /// The client's outbound queue overflowed.
    pub const SLOW_CONSUMER: u16 = 4008;
}

/// A complete data message from a client: all that reaches
/// [`Handler::on_message`](crate::Handler::on_message) (the engine answers pings and closes
/// itself, and reassembles fragments).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// A text message, valid UTF-8.
    Text(&'a str),
    /// A binary message.
    Binary(&'a [u8]),
}
