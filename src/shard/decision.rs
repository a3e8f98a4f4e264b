//! `Decision`: what the handler decides about an upgrade request.

use crate::client::Principal;

/// The answer to an upgrade request, from [`Handler::on_upgrade`](crate::Handler::on_upgrade).
#[derive(Debug)]
pub struct Decision(pub(crate) Verdict);

#[derive(Debug)]
pub(crate) enum Verdict {
    Accept {
        protocol: Option<String>,
        principal: Option<Principal>,
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
        })
    }

    /// Accept and answer with this subprotocol (one the client offered).
    pub fn with_protocol(self, protocol: impl Into<String>) -> Decision {
        match self.0 {
            Verdict::Accept { principal, .. } => Decision(Verdict::Accept {
                protocol: Some(protocol.into()),
                principal,
            }),
            reject => Decision(reject),
        }
    }

    /// Accept and mark the client authenticated as `principal` from the start.
    pub fn authenticated(self, principal: Principal) -> Decision {
        match self.0 {
            Verdict::Accept { protocol, .. } => Decision(Verdict::Accept {
                protocol,
                principal: Some(principal),
            }),
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
