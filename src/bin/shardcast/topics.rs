//! `shardcast serve --topics`: the topics handler (issue 8). A placeholder until the engine's
//! handler lands: it relays nothing.

/// Speaks the topics protocol on the engine.
#[derive(Debug)]
pub(crate) struct TopicRelay {
    /// Leave the publisher out of a publication's audience.
    #[expect(
        dead_code,
        reason = "read by issue 8's handler, which replaces this placeholder"
    )]
    pub(crate) exclude_sender: bool,
}

impl shardcast::Handler for TopicRelay {}
