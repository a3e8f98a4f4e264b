//! `Audience`: which clients of a shard a broadcast is delivered to.
//!
//! An audience is a filter evaluated by each shard against its own clients, so it costs no
//! cross-shard state. New criteria (topics) become new fields, with no change to the shard's
//! client map.

use crate::ClientId;

/// Who receives a broadcast. Built from [`Audience::ALL`] or [`Audience::AUTHENTICATED`], then
/// narrowed with [`Audience::except`].
///
/// ```
/// # use shardcast::{Audience, ClientId};
/// let sender = ClientId::from_u64(7);
/// let audience = Audience::AUTHENTICATED.except(sender);
/// assert!(audience.is_authenticated_only());
/// assert_eq!(audience.excluded(), Some(sender));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Audience {
    /// Only clients marked authenticated.
    authenticated_only: bool,
    /// One client that does not receive it (typically the sender).
    except: Option<ClientId>,
}

impl Audience {
    /// Every registered client.
    pub const ALL: Audience = Audience {
        authenticated_only: false,
        except: None,
    };
    /// Only clients marked with [`crate::Engine::set_authenticated`].
    pub const AUTHENTICATED: Audience = Audience {
        authenticated_only: true,
        except: None,
    };

    /// The same audience without `id`.
    pub fn except(self, id: ClientId) -> Audience {
        Audience {
            except: Some(id),
            ..self
        }
    }

    /// Whether only authenticated clients receive it.
    pub fn is_authenticated_only(&self) -> bool {
        self.authenticated_only
    }

    /// The client left out, if any.
    pub fn excluded(&self) -> Option<ClientId> {
        self.except
    }

    /// Whether a client with this id and authentication state is in the audience.
    pub(crate) fn admits(&self, id: ClientId, authenticated: bool) -> bool {
        (authenticated || !self.authenticated_only) && self.except != Some(id)
    }
}
