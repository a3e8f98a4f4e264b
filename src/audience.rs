//! `Audience`: which clients of a shard a broadcast is delivered to.
//!
//! An audience is a filter each shard evaluates against its own clients: everyone, or the
//! subscribers of some topics (found in the shard's topic index), narrowed by authentication
//! and one excluded client.

use crate::{ClientId, Topic};
use std::sync::Arc;

/// Who receives a broadcast. Built from [`Audience::ALL`], [`Audience::AUTHENTICATED`],
/// [`Audience::topic`] or [`Audience::topics`], then narrowed with [`Audience::except`] and
/// [`Audience::authenticated`].
///
/// ```
/// # use shardcast::{Audience, ClientId};
/// let sender = ClientId::from_u64(7);
/// let audience = Audience::AUTHENTICATED.except(sender);
/// assert!(audience.is_authenticated_only());
/// assert_eq!(audience.excluded(), Some(sender));
///
/// // The subscribers of "news" or "sports" (each receives a frame once, even if subscribed
/// // to both), except the sender.
/// let fans = Audience::topics(["news", "sports"]).except(sender);
/// assert_eq!(fans.topic_filter().map(<[_]>::len), Some(2));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audience {
    /// Only clients marked authenticated.
    authenticated_only: bool,
    /// One client that does not receive it (typically the sender).
    except: Option<ClientId>,
    /// Every client, or the subscribers of these topics.
    topics: Topics,
}

/// The topic part of an audience.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Topics {
    /// No topic filter: every client.
    #[default]
    Any,
    /// The subscribers of one topic (the common case, with no allocation).
    One(Topic),
    /// The subscribers of any of these topics, without repeats (none: nobody).
    Many(Arc<[Topic]>),
}

impl Audience {
    /// Every registered client.
    pub const ALL: Audience = Audience {
        authenticated_only: false,
        except: None,
        topics: Topics::Any,
    };
    /// Only clients marked with [`crate::Engine::set_authenticated`].
    pub const AUTHENTICATED: Audience = Audience {
        authenticated_only: true,
        except: None,
        topics: Topics::Any,
    };

    /// The subscribers of `topic`.
    ///
    /// ```
    /// # use shardcast::{Audience, Topic};
    /// let news = Topic::new("news");
    /// assert_eq!(Audience::topic(&news).topic_filter(), Some(&[news][..]));
    /// ```
    pub fn topic(topic: impl Into<Topic>) -> Audience {
        Audience {
            topics: Topics::One(topic.into()),
            ..Audience::ALL
        }
    }

    /// The subscribers of any of `topics`: a client subscribed to several receives each frame
    /// once. No topic at all is an audience of nobody.
    ///
    /// ```
    /// # use shardcast::Audience;
    /// let audience = Audience::topics(["a", "b", "a"]);
    /// assert_eq!(audience.topic_filter().map(<[_]>::len), Some(2), "repeats are dropped");
    /// ```
    pub fn topics<T: Into<Topic>>(topics: impl IntoIterator<Item = T>) -> Audience {
        let mut list: Vec<Topic> = Vec::new();
        for topic in topics {
            let topic = topic.into();
            if !list.contains(&topic) {
                list.push(topic);
            }
        }
        let topics = match <[Topic; 1]>::try_from(list) {
            Ok([one]) => Topics::One(one),
            Err(many) => Topics::Many(many.into()),
        };
        Audience {
            topics,
            ..Audience::ALL
        }
    }

    /// The same audience without `id`.
    pub fn except(self, id: ClientId) -> Audience {
        Audience {
            except: Some(id),
            ..self
        }
    }

    /// The same audience, only its clients marked authenticated.
    ///
    /// ```
    /// # use shardcast::Audience;
    /// assert_eq!(Audience::ALL.authenticated(), Audience::AUTHENTICATED);
    /// assert!(Audience::topic("news").authenticated().is_authenticated_only());
    /// ```
    pub fn authenticated(self) -> Audience {
        Audience {
            authenticated_only: true,
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

    /// The topics whose subscribers receive it, or `None` if it is not limited to topics.
    pub fn topic_filter(&self) -> Option<&[Topic]> {
        match &self.topics {
            Topics::Any => None,
            Topics::One(topic) => Some(std::slice::from_ref(topic)),
            Topics::Many(topics) => Some(topics),
        }
    }

    /// Whether a client with this id and authentication state passes the audience's filters
    /// other than topics (which the shard's topic index applies).
    pub(crate) fn admits(&self, id: ClientId, authenticated: bool) -> bool {
        (authenticated || !self.authenticated_only) && self.except != Some(id)
    }
}
