//! `Decision`: what the handler decides about an upgrade request.

use crate::Topic;
use crate::client::Principal;

/// The answer to an upgrade request, from [`Handler::on_upgrade`](crate::Handler::on_upgrade).
#[derive(Debug)]
pub struct Decision(pub(crate) Verdict);

#[derive(Debug)]
pub(crate) enum Verdict {
    Accept {
        protocol: Option<String>,
        principal: Option<Principal>,
        /// Subscribed at admission, without repeats.
        topics: Vec<Topic>,
    },
    Reject {
        status: u16,
        body: String,
    },
}

impl Decision {
    /// Accept, with no subprotocol, unauthenticated.
    pub fn accept() -> Decision {
        Decision(Verdict::Accept {
            protocol: None,
            principal: None,
            topics: Vec::new(),
        })
    }

    /// Accept and answer with this subprotocol (one the client offered).
    pub fn with_protocol(self, protocol: impl Into<String>) -> Decision {
        match self.0 {
            Verdict::Accept {
                principal, topics, ..
            } => Decision(Verdict::Accept {
                protocol: Some(protocol.into()),
                principal,
                topics,
            }),
            reject => Decision(reject),
        }
    }

    /// Accept and mark the client authenticated as `principal` from the start.
    pub fn authenticated(self, principal: Principal) -> Decision {
        match self.0 {
            Verdict::Accept {
                protocol, topics, ..
            } => Decision(Verdict::Accept {
                protocol,
                principal: Some(principal),
                topics,
            }),
            reject => Decision(reject),
        }
    }

    /// Accept and subscribe the client to `topic` from the start: it is in the topic's
    /// audience from the moment it is registered. A topic past the limits
    /// ([`Config::topic_bytes_max`](crate::Config::topic_bytes_max), empty, or more than
    /// [`Config::topics_per_client_max`](crate::Config::topics_per_client_max) in all) turns
    /// the decision into `400 Bad Request` naming the limit.
    ///
    /// ```
    /// use shardcast::wire::handshake::Request;
    /// use shardcast::{Decision, Handler};
    /// use std::net::SocketAddr;
    ///
    /// /// Subscribes every client to the room named by its path, `/rooms/NAME`.
    /// struct Rooms;
    ///
    /// impl Handler for Rooms {
    ///     fn on_upgrade(&self, request: &Request<'_>, _peer: Option<SocketAddr>) -> Decision {
    ///         match request.path().strip_prefix("/rooms/") {
    ///             Some(room) => Decision::accept().subscribe(room),
    ///             None => Decision::reject(404, "no such room"),
    ///         }
    ///     }
    /// }
    /// ```
    pub fn subscribe(self, topic: impl Into<Topic>) -> Decision {
        match self.0 {
            Verdict::Accept {
                protocol,
                principal,
                mut topics,
            } => {
                let topic = topic.into();
                if !topics.contains(&topic) {
                    topics.push(topic);
                }
                Decision(Verdict::Accept {
                    protocol,
                    principal,
                    topics,
                })
            }
            reject => Decision(reject),
        }
    }

    /// Refuse with this HTTP status (clamped to 400..=599) and a short text body.
    pub fn reject(status: u16, body: impl Into<String>) -> Decision {
        Decision(Verdict::Reject {
            status: status.clamp(400, 599),
            body: body.into(),
        })
    }
}
