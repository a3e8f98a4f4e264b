//! The `deflate_offer` target: `Sec-WebSocket-Extensions` values through the permessage-deflate
//! negotiation, against a plain reading of RFC 7692.

use crate::wire::deflate::{self, Agreement, EXTENSION, negotiate};

/// Arbitrary bytes as the `Sec-WebSocket-Extensions` header values of one request.
///
/// Input: the values, separated by `\n` (which no header value holds): one or more.
///
/// Checks: [`negotiate`] never panics and agrees with [`reference`], an independent reading of
/// the grammar and of RFC 7692's four parameters: the same offer wins (the first acceptable one,
/// across the values in order), with the same `server_max_window_bits`. An agreement has
/// [`Agreement::window_bits`] `None` (8 bits offered) or 9..=15, the offered bound when it
/// is at least 9; its [`Agreement::response`] is one well-formed `permessage-deflate` element
/// with both `no_context_takeover` parameters, the offered `server_max_window_bits` and no
/// `client_max_window_bits`, and [`negotiate`] accepts it again as the same agreement (round
/// trip). A further header `permessage-deflate` never changes an agreement, and turns "none"
/// into [`Agreement::DEFAULT`].
pub fn deflate_offer(data: &[u8]) {
    let values: Vec<&[u8]> = data.split(|&b| b == b'\n').collect();
    let agreed = negotiate(values.iter().copied());
    let expected = reference(&values);
    assert_eq!(
        agreed.map(|a| a.response()),
        expected.map(response_for),
        "negotiate disagrees with the reference on {:?}",
        values
            .iter()
            .map(|v| String::from_utf8_lossy(v))
            .collect::<Vec<_>>()
    );
    let fallback = negotiate(values.iter().copied().chain([EXTENSION.as_bytes()]));
    assert_eq!(fallback, Some(agreed.unwrap_or(Agreement::DEFAULT)));
    let (Some(agreed), Some(offered)) = (agreed, expected) else {
        return;
    };

    let bits = agreed.window_bits();
    match offered {
        None => assert_eq!(bits, Some(deflate::WINDOW_BITS_MAX)),
        Some(8) => assert_eq!(bits, None, "zlib cannot write 8-bit windows"),
        Some(offered) => assert_eq!(bits, Some(offered)),
    }
    assert!(bits.is_none_or(|b| (9..=15).contains(&b)), "{bits:?}");

    let response = agreed.response();
    let parsed = elements(response.as_bytes());
    let Some([(name, params)]) = parsed.as_deref() else {
        panic!("not one extension element: {response:?}");
    };
    assert_eq!(*name, EXTENSION.as_bytes(), "{response:?}");
    let value_of = |wanted: &str| {
        let mut found = params.iter().filter(|(p, _)| *p == wanted.as_bytes());
        let first = found.next().map(|&(_, v)| v);
        assert!(found.next().is_none(), "{wanted} twice in {response:?}");
        first
    };
    assert_eq!(value_of("server_no_context_takeover"), Some(None));
    assert_eq!(value_of("client_no_context_takeover"), Some(None));
    assert_eq!(value_of("client_max_window_bits"), None, "{response:?}");
    let answered = value_of("server_max_window_bits").map(|v| v.and_then(window_bits));
    assert_eq!(answered, offered.map(Some), "{response:?}");
    assert_eq!(params.len(), 2 + usize::from(offered.is_some()));

    let again = negotiate([response.as_bytes()]);
    assert_eq!(
        again,
        Some(agreed),
        "the response is not accepted as itself"
    );
    assert_eq!(again.and_then(|a| a.window_bits()), bits);
}

/// The response an offer bounding the server's window to `bits` (or not) gets, as written
/// out in RFC 7692 7.1: the extension, both `no_context_takeover` parameters, and the bound.
fn response_for(bits: Option<u8>) -> String {
    let mut out =
        String::from("permessage-deflate; server_no_context_takeover; client_no_context_takeover");
    if let Some(bits) = bits {
        out += &format!("; server_max_window_bits={bits}");
    }
    out
}

/// The `server_max_window_bits` of the first acceptable `permessage-deflate` offer among
/// `values` (`Some(None)`: accepted, unbounded), or `None` when there is none.
fn reference(values: &[&[u8]]) -> Option<Option<u8>> {
    values
        .iter()
        .filter_map(|value| elements(value))
        .flatten()
        .find_map(|(name, params)| {
            if !name.eq_ignore_ascii_case(EXTENSION.as_bytes()) {
                return None;
            }
            accept(&params)
        })
}

/// One list element: the extension's name and its parameters (names and unquoted values).
type Element<'a> = (&'a [u8], Vec<(&'a [u8], Option<&'a [u8]>)>);

/// A header value read by splitting (RFC 6455 9.1, with quoted values that must hold a token and
/// no escapes): elements at commas, parameters at semicolons, a value after the first `=`, each
/// piece trimmed of spaces and tabs. `None` when some piece is not what it must be.
fn elements(value: &[u8]) -> Option<Vec<Element<'_>>> {
    let mut list = Vec::new();
    for element in value.split(|&b| b == b',').map(trim) {
        if element.is_empty() {
            continue;
        }
        let mut pieces = element.split(|&b| b == b';').map(trim);
        let name = pieces.next().filter(|p| is_token(p))?;
        let mut params = Vec::new();
        for piece in pieces {
            let (param, value) = match piece.iter().position(|&b| b == b'=') {
                Some(at) => (trim(&piece[..at]), Some(unquote(trim(&piece[at + 1..]))?)),
                None => (piece, None),
            };
            if !is_token(param) {
                return None;
            }
            params.push((param, value));
        }
        list.push((name, params));
    }
    Some(list)
}

/// `server_max_window_bits` (`Some(None)`: not bounded) when each parameter is one of RFC
/// 7692's four, at most once, with a value exactly when it must or may have one.
fn accept(params: &[(&[u8], Option<&[u8]>)]) -> Option<Option<u8>> {
    let mut seen: Vec<Vec<u8>> = Vec::new();
    let mut bound = None;
    for &(name, value) in params {
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        match (&name[..], value) {
            (b"server_no_context_takeover" | b"client_no_context_takeover", None) => {}
            (b"client_max_window_bits", None) => {}
            (b"client_max_window_bits", Some(v)) => {
                window_bits(v)?;
            }
            (b"server_max_window_bits", Some(v)) => bound = Some(window_bits(v)?),
            _ => return None,
        }
        seen.push(name);
    }
    Some(bound)
}

/// A window size value: exactly one of "8" to "15".
fn window_bits(value: &[u8]) -> Option<u8> {
    (8..=15u8).find(|bits| bits.to_string().as_bytes() == value)
}

/// A value: a token, or a token between double quotes.
fn unquote(value: &[u8]) -> Option<&[u8]> {
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    };
    is_token(inner).then_some(inner)
}

/// RFC 9110 5.6.2: `1*tchar`.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty()
        && s.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `s` without leading and trailing spaces and tabs.
fn trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b != b' ' && b != b'\t');
    let end = s.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(start), Some(end)) => &s[start..=end],
        _ => &[],
    }
}
