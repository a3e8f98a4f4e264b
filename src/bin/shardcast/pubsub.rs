//! The topics protocol of `shardcast serve --topics`, as the shardcast relay (`topics`) and
//! the naive baseline speak it: parsing only, no I/O.
//!
//! - `ws://HOST:PORT/?sub=T1&sub=T2` subscribes at upgrade. Names are URL-encoded (`%XX`, and
//!   `+` for a space, as `URLSearchParams` decodes them); other parameters are ignored.
//! - A text message `sub T` or `unsub T` subscribes or unsubscribes.
//! - A message, text or binary, `pub T BODY` publishes BODY (the bytes after the second space)
//!   to the subscribers of T, with the message's opcode.
//! - A topic name is not empty and has no space (`pub` could not name it). Anything else is a
//!   protocol error, for which the server closes that client with 1008 and the error as reason.

/// What a client's message asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Request<'a> {
    /// `sub T`.
    Subscribe(&'a [u8]),
    /// `unsub T`.
    Unsubscribe(&'a [u8]),
    /// `pub T BODY`: the topic, and where BODY starts in the message.
    Publish {
        /// T.
        topic: &'a [u8],
        /// Offset of BODY in the message (it may be empty).
        body_at: usize,
    },
}

/// Parses one complete message; `text` says whether it came as a text message (only those may
/// subscribe or unsubscribe). The error is the close reason.
pub(crate) fn parse(message: &[u8], text: bool) -> Result<Request<'_>, &'static str> {
    let Some(space) = message.iter().position(|&b| b == b' ') else {
        return Err("expected sub T, unsub T or pub T BODY");
    };
    let (verb, rest) = (&message[..space], &message[space + 1..]);
    match verb {
        b"pub" => {
            let Some(end) = rest.iter().position(|&b| b == b' ') else {
                return Err("pub T BODY: no space after the topic");
            };
            let topic = &rest[..end];
            if topic.is_empty() {
                return Err("empty topic");
            }
            Ok(Request::Publish {
                topic,
                body_at: space + 1 + end + 1,
            })
        }
        b"sub" | b"unsub" if text => {
            let topic = name(rest)?;
            Ok(if verb == b"sub" {
                Request::Subscribe(topic)
            } else {
                Request::Unsubscribe(topic)
            })
        }
        b"sub" | b"unsub" => Err("sub and unsub must be text messages"),
        _ => Err("expected sub T, unsub T or pub T BODY"),
    }
}

/// `topic`, if it is a valid name.
fn name(topic: &[u8]) -> Result<&[u8], &'static str> {
    if topic.is_empty() {
        Err("empty topic")
    } else if topic.contains(&b' ') {
        Err("a topic has no space")
    } else {
        Ok(topic)
    }
}

/// The topics `?sub=` names in the query of an upgrade request's target (`/path?query`),
/// decoded. The error is the close reason.
pub(crate) fn subscriptions(target: &str) -> Result<Vec<Vec<u8>>, &'static str> {
    let Some((_, query)) = target.split_once('?') else {
        return Ok(Vec::new());
    };
    let mut topics = Vec::new();
    for pair in query.split('&') {
        let Some(("sub", value)) = pair.split_once('=') else {
            continue;
        };
        let topic = decode(value).ok_or("bad percent-encoding in ?sub=")?;
        name(&topic)?;
        topics.push(topic);
    }
    Ok(topics)
}

/// Decodes `%XX` and `+` (a space), as `URLSearchParams` does; `None` for a `%` not followed
/// by two hex digits (which `percent_decode` would keep as it is).
fn decode(s: &str) -> Option<Vec<u8>> {
    let malformed = s.match_indices('%').any(|(at, _)| {
        !s.get(at + 1..at + 3)
            .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    if malformed {
        return None;
    }
    let plus_as_space = s.replace('+', " ");
    Some(percent_encoding::percent_decode_str(&plus_as_space).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pub_splits_at_the_second_space_and_keeps_the_rest_of_the_body() {
        let message = b"pub news a b ";
        assert_eq!(
            parse(message, false),
            Ok(Request::Publish {
                topic: b"news",
                body_at: 9
            })
        );
        assert_eq!(&message[9..], b"a b ");
        assert_eq!(
            parse(b"pub t ", true),
            Ok(Request::Publish {
                topic: b"t",
                body_at: 6
            })
        );
    }

    #[test]
    fn sub_and_unsub_name_one_topic_in_a_text_message() {
        assert_eq!(parse(b"sub a", true), Ok(Request::Subscribe(b"a")));
        assert_eq!(parse(b"unsub a", true), Ok(Request::Unsubscribe(b"a")));
        assert!(parse(b"sub a", false).is_err());
        assert!(parse(b"sub a b", true).is_err());
        assert!(parse(b"sub ", true).is_err());
    }

    #[test]
    fn anything_else_is_a_protocol_error() {
        for message in [
            &b"hello"[..],
            b"pub t",
            b"pub  body",
            b"PUB t x",
            b"",
            b" sub a",
        ] {
            assert!(parse(message, true).is_err(), "{message:?}");
        }
    }

    #[test]
    fn the_query_subscribes_to_each_sub_decoded() {
        assert_eq!(
            subscriptions("/?sub=a&x=1&sub=b%2Fc"),
            Ok(vec![b"a".to_vec(), b"b/c".to_vec()])
        );
        assert_eq!(subscriptions("/"), Ok(vec![]));
        assert!(subscriptions("/?sub=").is_err());
        assert!(subscriptions("/?sub=%4").is_err());
        // A space, as `+` or `%20`, makes a name that `pub` could not address.
        assert!(subscriptions("/?sub=d+e").is_err());
        assert!(subscriptions("/?sub=d%20e").is_err());
    }
}
