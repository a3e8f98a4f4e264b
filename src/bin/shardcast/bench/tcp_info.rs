//! The data segments the load generator's measured sockets received: `tcpi_data_segs_in` of
//! the kernel's `struct tcp_info` (Linux 4.6 and later), summed over the sockets.
//!
//! Each of those segments is one the server sent to a measured client, so the sum's growth
//! over the window is the server's data segments to its subscribers, exactly: no other
//! process's traffic and no ack counts, unlike the machine's `TcpOutSegs`. The clients'
//! pongs (one per client every 5 s) count too.
//!
//! The crate forbids `unsafe`, which `getsockopt(TCP_INFO)` needs. sock_diag (what `ss -ti`
//! uses) returns the same `struct tcp_info`, filled by the same kernel function
//! (`tcp_get_info`), over a netlink socket that safe code reads through `socket2`. A reading
//! is one dump of the network namespace's TCP sockets, matched by address: it costs nothing
//! per frame, and the bench reads it twice per run, outside the measured CPU time.
//!
//! # Bounds
//!
//! A dump reads into one buffer of [`RECV_BYTES`], gives up after [`DUMP_WITHIN`], and keeps
//! at most one value per measured socket; a reading tries [`DUMPS_MAX`] dumps.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
#[cfg(target_os = "linux")]
use std::time::Duration;

/// Bytes of the buffer a dump is read into: a reply of the kernel's is at most 32 KiB.
#[cfg(target_os = "linux")]
const RECV_BYTES: usize = 64 << 10;
/// How long one dump may take before the reading gives up (one of 20,000 sockets takes
/// about 35 ms).
#[cfg(target_os = "linux")]
const DUMP_WITHIN: Duration = Duration::from_secs(5);
/// Dumps a reading tries: a dump runs while sockets come and go, and may then miss one.
#[cfg(target_os = "linux")]
const DUMPS_MAX: usize = 3;

/// A TCP connection by its two ends: (address, port) here, and at the peer.
type Tuple = ((IpAddr, u16), (IpAddr, u16));

/// The measured clients' sockets, by their addresses.
#[derive(Debug, Default)]
pub(crate) struct Receivers {
    /// Each socket's (local, peer) ends; one entry per measured client.
    tuples: HashSet<Tuple>,
}

impl Receivers {
    /// The sockets whose (local, peer) addresses are `ends`.
    pub(crate) fn new(ends: impl IntoIterator<Item = (SocketAddr, SocketAddr)>) -> Receivers {
        let tuples = ends
            .into_iter()
            .map(|(local, peer)| ((local.ip(), local.port()), (peer.ip(), peer.port())))
            .collect();
        Receivers { tuples }
    }

    /// The sum of `tcpi_data_segs_in` over every socket, now; `None` off Linux, when the
    /// kernel does not answer or has no such field, or when a socket is not found.
    pub(crate) fn data_segments_in(&self) -> Option<u64> {
        #[cfg(target_os = "linux")]
        for _ in 0..DUMPS_MAX {
            match diag::data_segments_in(&self.tuples) {
                Ok(Some(sum)) => return Some(sum),
                // A dump missed a socket: try again.
                Ok(None) => {}
                Err(diag::Unavailable) => return None,
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = &self.tuples;
        None
    }
}

/// The growth of a per-socket counter's sum from `before` to `after`; `None` if either is
/// unknown or the sum went back (a counter of a socket wrapped past `u32::MAX`).
pub(crate) fn growth(before: Option<u64>, after: Option<u64>) -> Option<u64> {
    after?.checked_sub(before?)
}

/// sock_diag over netlink: the request, and the parsing of its replies. Layouts are those of
/// `linux/netlink.h`, `linux/inet_diag.h` and `linux/tcp.h`; numbers in host order but ports
/// and addresses, which are big-endian.
#[cfg(target_os = "linux")]
mod diag {
    use super::{DUMP_WITHIN, RECV_BYTES, Tuple};
    use std::collections::{HashMap, HashSet};
    use std::io::{self, Read};
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::time::Instant;

    /// `AF_NETLINK`.
    const AF_NETLINK: i32 = 16;
    /// `NETLINK_SOCK_DIAG`.
    const NETLINK_SOCK_DIAG: i32 = 4;
    /// `AF_INET`.
    const AF_INET: u8 = 2;
    /// `AF_INET6`.
    const AF_INET6: u8 = 10;
    /// `IPPROTO_TCP`.
    const IPPROTO_TCP: u8 = 6;
    /// `SOCK_DIAG_BY_FAMILY`: the message type of the request and of each socket's reply.
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    /// `NLMSG_ERROR`.
    const NLMSG_ERROR: u16 = 2;
    /// `NLMSG_DONE`: the end of a dump.
    const NLMSG_DONE: u16 = 3;
    /// `NLM_F_REQUEST | NLM_F_DUMP`.
    const REQUEST_DUMP: u16 = 0x1 | 0x300;
    /// `INET_DIAG_INFO`: the attribute that holds a socket's `struct tcp_info`.
    const INET_DIAG_INFO: u16 = 2;
    /// `struct nlmsghdr`: `u32 len | u16 type | u16 flags | u32 seq | u32 pid`.
    const NLMSG_HEADER_BYTES: usize = 16;
    /// `struct inet_diag_msg`: `u8 family, state, timer, retrans | struct inet_diag_sockid
    /// (be16 sport | be16 dport | be32 src[4] | be32 dst[4] | u32 if | u32 cookie[2]) | u32
    /// expires, rqueue, wqueue, uid, inode`; its attributes follow.
    const DIAG_MSG_BYTES: usize = 72;
    /// `struct rtattr`: `u16 len | u16 type`, then the value.
    const RTATTR_HEADER_BYTES: usize = 4;
    /// Offset of `u32 tcpi_data_segs_in` in `struct tcp_info`: after 8 `u8`s, 24 `u32`s (rto
    /// to total_retrans), 4 `u64`s (pacing_rate to bytes_received) and 4 `u32`s (segs_out,
    /// segs_in, notsent_bytes, min_rtt). A kernel before 4.6 returns fewer bytes.
    const DATA_SEGS_IN_AT: usize = 152;

    /// The kernel cannot say: the netlink socket failed, the kernel answered with an error, a
    /// reply was malformed, or a socket's `tcp_info` ends before the field.
    #[derive(Debug)]
    pub(super) struct Unavailable;

    impl From<io::Error> for Unavailable {
        fn from(_: io::Error) -> Unavailable {
            Unavailable
        }
    }

    /// Whether a reply holds more messages to come.
    #[derive(Debug, PartialEq, Eq)]
    pub(super) enum Step {
        /// The dump goes on in the next reply.
        More,
        /// `NLMSG_DONE`: the dump is complete.
        Done,
    }

    /// The sum of `tcpi_data_segs_in` over `tuples`: `Ok(None)` if a dump missed one of them
    /// (worth another try), `Err` if the kernel cannot say.
    pub(super) fn data_segments_in(tuples: &HashSet<Tuple>) -> Result<Option<u64>, Unavailable> {
        let mut found = HashMap::with_capacity(tuples.len());
        let families: HashSet<u8> = tuples.iter().map(|((ip, _), _)| family(*ip)).collect();
        for family in families {
            dump(family, tuples, &mut found)?;
        }
        Ok((found.len() == tuples.len()).then(|| found.values().map(|&v| u64::from(v)).sum()))
    }

    /// The address family of `ip`.
    fn family(ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(_) => AF_INET,
            IpAddr::V6(_) => AF_INET6,
        }
    }

    /// Dumps the TCP sockets of `family`, keeping in `found` the value of each of `tuples`.
    fn dump(
        family: u8,
        tuples: &HashSet<Tuple>,
        found: &mut HashMap<Tuple, u32>,
    ) -> Result<(), Unavailable> {
        let socket = socket2::Socket::new(
            socket2::Domain::from(AF_NETLINK),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::from(NETLINK_SOCK_DIAG)),
        )?;
        socket.set_read_timeout(Some(DUMP_WITHIN))?;
        socket.send(&request(family))?;
        let started = Instant::now();
        let mut buf = vec![0u8; RECV_BYTES];
        loop {
            let n = (&socket).read(&mut buf)?;
            if parse(&buf[..n], tuples, found)? == Step::Done {
                return Ok(());
            }
            if started.elapsed() > DUMP_WITHIN {
                return Err(Unavailable);
            }
        }
    }

    /// A dump request for every TCP socket of `family`, in any state, with its `tcp_info`:
    /// `struct nlmsghdr` then `struct inet_diag_req_v2` (`u8 family | u8 protocol | u8 ext |
    /// u8 pad | u32 states | struct inet_diag_sockid`, zeroed: no filter).
    pub(super) fn request(family: u8) -> Vec<u8> {
        const REQ_V2_BYTES: usize = 56;
        let len = NLMSG_HEADER_BYTES + REQ_V2_BYTES;
        let mut r = Vec::with_capacity(len);
        r.extend_from_slice(&(len as u32).to_ne_bytes());
        r.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        r.extend_from_slice(&REQUEST_DUMP.to_ne_bytes());
        r.extend_from_slice(&1u32.to_ne_bytes()); // seq
        r.extend_from_slice(&0u32.to_ne_bytes()); // pid: the kernel's
        // `idiag_ext` is a bit set of the attributes wanted, bit `INET_DIAG_INFO - 1`.
        r.extend_from_slice(&[family, IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0]);
        r.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
        r.resize(len, 0);
        r
    }

    /// Takes the messages of one reply: keeps in `found` the `tcpi_data_segs_in` of each
    /// socket of `tuples`.
    pub(super) fn parse(
        mut reply: &[u8],
        tuples: &HashSet<Tuple>,
        found: &mut HashMap<Tuple, u32>,
    ) -> Result<Step, Unavailable> {
        while reply.len() >= NLMSG_HEADER_BYTES {
            let len = u32_at(reply, 0).ok_or(Unavailable)? as usize;
            let kind = u16_at(reply, 4).ok_or(Unavailable)?;
            let message = reply.get(NLMSG_HEADER_BYTES..len).ok_or(Unavailable)?;
            match kind {
                NLMSG_DONE => return Ok(Step::Done),
                // `struct nlmsgerr`: a negative errno (sock_diag refused), then the request.
                NLMSG_ERROR => return Err(Unavailable),
                SOCK_DIAG_BY_FAMILY => {
                    let tuple = tuple_of(message).ok_or(Unavailable)?;
                    if tuples.contains(&tuple) {
                        let info = attribute(message.get(DIAG_MSG_BYTES..).unwrap_or_default());
                        let segs = info.and_then(data_segs_in).ok_or(Unavailable)?;
                        // A dump may show a socket twice: the last value holds.
                        found.insert(tuple, segs);
                    }
                }
                _ => {}
            }
            reply = reply.get(align(len)..).unwrap_or_default();
        }
        Ok(Step::More)
    }

    /// The (local, peer) ends of the socket an `inet_diag_msg` describes.
    fn tuple_of(message: &[u8]) -> Option<Tuple> {
        let message = message.get(..DIAG_MSG_BYTES)?;
        let port = |at: usize| u16::from_be_bytes([message[at], message[at + 1]]);
        let ip = |at: usize| -> Option<IpAddr> {
            match message[0] {
                AF_INET => {
                    Some(Ipv4Addr::from(<[u8; 4]>::try_from(&message[at..at + 4]).ok()?).into())
                }
                AF_INET6 => {
                    Some(Ipv6Addr::from(<[u8; 16]>::try_from(&message[at..at + 16]).ok()?).into())
                }
                _ => None,
            }
        };
        Some(((ip(8)?, port(4)), (ip(24)?, port(6))))
    }

    /// The value of the `INET_DIAG_INFO` attribute among `attributes`, as many bytes as the
    /// kernel gave.
    fn attribute(mut attributes: &[u8]) -> Option<&[u8]> {
        while attributes.len() >= RTATTR_HEADER_BYTES {
            let len = usize::from(u16_at(attributes, 0)?);
            let value = attributes.get(RTATTR_HEADER_BYTES..len)?;
            if u16_at(attributes, 2)? == INET_DIAG_INFO {
                return Some(value);
            }
            attributes = attributes.get(align(len.max(RTATTR_HEADER_BYTES))..)?;
        }
        None
    }

    /// `tcpi_data_segs_in` of a `struct tcp_info` of `info.len()` bytes; `None` if it ends
    /// before the field (a kernel before 4.6).
    pub(super) fn data_segs_in(info: &[u8]) -> Option<u32> {
        u32_at(info, DATA_SEGS_IN_AT)
    }

    /// `len` rounded up to netlink's alignment of 4 bytes.
    fn align(len: usize) -> usize {
        len.saturating_add(3) & !3
    }

    /// The host-order `u32` at `at`.
    fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
        Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    }

    /// The host-order `u16` at `at`.
    fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
        Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_is_unknown_when_an_end_is_or_the_sum_went_back() {
        assert_eq!(growth(Some(10), Some(25)), Some(15));
        assert_eq!(growth(None, Some(25)), None);
        assert_eq!(growth(Some(10), None), None);
        assert_eq!(growth(Some(25), Some(10)), None);
    }

    #[cfg(target_os = "linux")]
    mod linux {
        use super::super::diag::{self, Step};
        use super::super::*;
        use std::collections::HashMap;
        use std::net::{Ipv4Addr, TcpListener, TcpStream};

        /// A reply holding one `inet_diag_msg` for `local` -> `peer` whose `tcp_info` has
        /// `info_bytes` bytes with `tcpi_data_segs_in` = `segs` (if they reach it), then
        /// `NLMSG_DONE`.
        fn reply(local: SocketAddr, peer: SocketAddr, info_bytes: usize, segs: u32) -> Vec<u8> {
            let mut msg = vec![0u8; 72];
            msg[0] = 2;
            msg[4..6].copy_from_slice(&local.port().to_be_bytes());
            msg[6..8].copy_from_slice(&peer.port().to_be_bytes());
            let v4 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.octets(),
                IpAddr::V6(_) => unreachable!("the tests use IPv4"),
            };
            msg[8..12].copy_from_slice(&v4(local));
            msg[24..28].copy_from_slice(&v4(peer));
            let mut info = vec![0u8; info_bytes];
            if let Some(field) = info.get_mut(152..156) {
                field.copy_from_slice(&segs.to_ne_bytes());
            }
            msg.extend_from_slice(&((4 + info_bytes) as u16).to_ne_bytes());
            msg.extend_from_slice(&2u16.to_ne_bytes());
            msg.extend_from_slice(&info);
            msg.resize(msg.len().next_multiple_of(4), 0);
            let mut out = Vec::new();
            for (kind, body) in [(20u16, msg), (3u16, vec![0u8; 4])] {
                out.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
                out.extend_from_slice(&kind.to_ne_bytes());
                out.extend_from_slice(&[0u8; 10]);
                out.extend_from_slice(&body);
            }
            out
        }

        fn ends() -> (SocketAddr, SocketAddr) {
            (
                SocketAddr::new(Ipv4Addr::new(127, 0, 0, 7).into(), 40_000),
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 9001),
            )
        }

        #[test]
        fn a_socket_s_data_segments_are_read_from_its_tcp_info() {
            let (local, peer) = ends();
            let receivers = Receivers::new([(local, peer)]);
            let mut found = HashMap::new();
            let step = diag::parse(&reply(local, peer, 232, 77), &receivers.tuples, &mut found);
            assert_eq!(step.ok(), Some(Step::Done));
            assert_eq!(found.values().copied().collect::<Vec<_>>(), [77]);
        }

        #[test]
        fn another_socket_is_ignored() {
            let (local, peer) = ends();
            let receivers = Receivers::new([(local, peer)]);
            let mut found = HashMap::new();
            let step = diag::parse(&reply(peer, local, 232, 77), &receivers.tuples, &mut found);
            assert_eq!(step.ok(), Some(Step::Done));
            assert!(found.is_empty());
        }

        #[test]
        fn a_tcp_info_shorter_than_the_field_is_unavailable() {
            assert_eq!(diag::data_segs_in(&[0u8; 155]), None);
            assert_eq!(diag::data_segs_in(&[0u8; 156]), Some(0));
            let (local, peer) = ends();
            let receivers = Receivers::new([(local, peer)]);
            let mut found = HashMap::new();
            // What a kernel before 4.6 returns: `tcp_info` up to `tcpi_min_rtt`.
            let old = reply(local, peer, 152, 77);
            assert!(diag::parse(&old, &receivers.tuples, &mut found).is_err());
        }

        #[test]
        fn a_truncated_reply_is_unavailable() {
            let (local, peer) = ends();
            let receivers = Receivers::new([(local, peer)]);
            let full = reply(local, peer, 232, 77);
            let mut found = HashMap::new();
            assert!(diag::parse(&full[..100], &receivers.tuples, &mut found).is_err());
        }

        #[test]
        fn the_request_is_a_dump_of_tcp_sockets_with_their_tcp_info() {
            let r = diag::request(2);
            assert_eq!(r.len(), 72);
            assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
            assert_eq!(&r[16..20], &[2, 6, 2, 0]);
        }

        /// On the machine itself: a socket that received two writes' worth of data segments
        /// says so (skipped where the kernel does not answer sock_diag).
        #[test]
        fn a_loopback_socket_counts_the_segments_it_received() {
            use std::io::{Read, Write};
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            let (mut server, _) = listener.accept().unwrap();
            server.set_nodelay(true).unwrap();
            let receivers =
                Receivers::new([(client.local_addr().unwrap(), client.peer_addr().unwrap())]);
            let Some(before) = receivers.data_segments_in() else {
                eprintln!("sock_diag unavailable here: skipped");
                return;
            };
            let mut buf = [0u8; 8];
            for _ in 0..2 {
                server.write_all(b"ping").unwrap();
                client.read_exact(&mut buf[..4]).unwrap();
            }
            let after = receivers.data_segments_in();
            assert_eq!(growth(Some(before), after), Some(2));
        }
    }
}
