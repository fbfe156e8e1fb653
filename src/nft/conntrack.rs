//! Flushing a pod's UDP conntrack entries to endpoints that went away (ctnetlink, the
//! conntrack subsystem of the same `NETLINK_NETFILTER` socket family): UDP has no connection
//! to end, so without this a client keeps sending a "connection" to a Service to the
//! endpoint it was first DNATed to until its entry times out, even after that endpoint left.
//!
//! One dump of the namespace's entries, then one delete per entry whose reply comes from a
//! gone endpoint (the reply tuple's source: after DNAT, the endpoint's address).

use super::error::NftError;
use super::wire::{self, Reply};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::io;
use std::net::IpAddr;
use std::path::Path;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;

/// Deletes the UDP conntrack entries of the namespace at `netns` that were DNATed to one of
/// `endpoints` (their reply comes from it, their original destination was another: the
/// ClusterIP); how many it deleted. An entry that went meanwhile is no error.
pub fn flush_udp_to(netns: &Path, endpoints: &[IpAddr]) -> Result<usize, NftError> {
    let endpoints = endpoints.to_vec();
    let netns_error = |source| NftError::Netns { path: netns.to_path_buf(), source };
    crate::netns::run_in(netns, move || flush_here(&endpoints)).map_err(netns_error)?
}

fn flush_here(endpoints: &[IpAddr]) -> Result<usize, NftError> {
    let mut socket = Socket::new(NETLINK_NETFILTER).map_err(NftError::Socket)?;
    socket.bind_auto().map_err(NftError::Socket)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(NftError::Socket)?;
    let mut deleted = 0;
    let mut seq = 0;
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        seq += 1;
        send(&socket, IPCTNL_MSG_CT_GET, NLM_F_DUMP, seq, family, &[])?;
        let mut gone = Vec::new();
        for reply in receive(&mut socket, seq)? {
            let Reply::Message { kind, attrs, .. } = reply else { continue };
            if kind != (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
                continue;
            }
            if let Some(orig) = stale(&attrs, endpoints) {
                gone.push(orig);
            }
        }
        for orig in gone {
            seq += 1;
            send(&socket, IPCTNL_MSG_CT_DELETE, NLM_F_ACK, seq, family, &orig)?;
            for reply in receive(&mut socket, seq)? {
                match reply {
                    Reply::Ack { errno: 0, .. } => deleted += 1,
                    Reply::Ack { errno, .. } if errno == libc::ENOENT => {}
                    Reply::Ack { errno, .. } => {
                        return Err(NftError::Refused { what: "delete conntrack entry".into(), index: 1, errno })
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(deleted)
}

/// The entry's original tuple, as an attribute to send back, when it is UDP and its reply
/// comes from one of `endpoints`.
fn stale(attrs: &[u8], endpoints: &[IpAddr]) -> Option<Vec<u8>> {
    let orig = wire::find_attr(attrs, CTA_TUPLE_ORIG)?;
    let proto = wire::find_attr(orig, CTA_TUPLE_PROTO)?;
    if wire::find_attr(proto, CTA_PROTO_NUM)?.first() != Some(&libc::IPPROTO_UDP.try_into().ok()?) {
        return None;
    }
    let reply_ip = wire::find_attr(wire::find_attr(attrs, CTA_TUPLE_REPLY)?, CTA_TUPLE_IP)?;
    let source = address(reply_ip, CTA_IP_V4_SRC, CTA_IP_V6_SRC)?;
    let destination = address(wire::find_attr(orig, CTA_TUPLE_IP)?, CTA_IP_V4_DST, CTA_IP_V6_DST)?;
    // Only flows this namespace DNATed to the endpoint (a client's): not the endpoint's own
    // flows when it is in this namespace too (a server's, answered by itself).
    if !endpoints.contains(&source) || destination == source {
        return None;
    }
    let mut out = Vec::with_capacity(orig.len() + 4);
    out.extend_from_slice(&((orig.len() + 4) as u16).to_ne_bytes());
    out.extend_from_slice(&(CTA_TUPLE_ORIG | NLA_F_NESTED).to_ne_bytes());
    out.extend_from_slice(orig);
    Some(out)
}

fn address(tuple_ip: &[u8], v4: u16, v6: u16) -> Option<IpAddr> {
    match wire::find_attr(tuple_ip, v4) {
        Some(a) => Some(<[u8; 4]>::try_from(a).ok()?.into()),
        None => Some(<[u8; 16]>::try_from(wire::find_attr(tuple_ip, v6)?).ok()?.into()),
    }
}

fn send(socket: &Socket, msg: u16, flags: u16, seq: u32, family: u8, body: &[u8]) -> Result<(), NftError> {
    let len = 16 + 4 + body.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&((NFNL_SUBSYS_CTNETLINK << 8) | msg).to_ne_bytes());
    out.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.extend_from_slice(&[family, 0, 0, 0]);
    out.extend_from_slice(body);
    socket.send(&out, 0).map_err(NftError::Socket)?;
    Ok(())
}

/// The answers to request `seq`, up to its `DONE` (a dump) or its ACK.
fn receive(socket: &mut Socket, seq: u32) -> Result<Vec<Reply>, NftError> {
    let mut out = Vec::new();
    loop {
        let (data, _) = match socket.recv_from_full() {
            Ok(answer) => answer,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(NftError::Socket(e)),
        };
        for reply in wire::parse_replies(&data).map_err(NftError::Protocol)? {
            match reply {
                Reply::Done { seq: s } if s == seq => return Ok(out),
                Reply::Ack { seq: s, .. } if s == seq => {
                    out.push(reply);
                    return Ok(out);
                }
                Reply::Message { seq: s, .. } if s == seq => out.push(reply),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::service_proxy::{table, Protocol, ServicePort};
    use crate::nft::Nft;
    use std::process::Command;

    struct Ns(String);

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    fn ip(args: &str) {
        let ok = Command::new("ip").args(args.split(' ')).status().is_ok_and(|s| s.success());
        assert!(ok, "ip {args}");
    }

    #[test]
    fn udp_entries_dnated_to_a_gone_endpoint_are_deleted_and_others_kept() {
        let ns = Ns(format!("kactus-ct-{}", std::process::id()));
        ip(&format!("netns add {}", ns.0));
        ip(&format!("-n {} link set lo up", ns.0));
        ip(&format!("-n {} link add va type veth peer name vb", ns.0));
        ip(&format!("-n {} link set va up", ns.0));
        ip(&format!("-n {} link set vb up", ns.0));
        ip(&format!("-n {} addr add 10.1.0.2/24 dev va", ns.0));
        ip(&format!("-n {} addr add 10.1.0.3/24 dev vb", ns.0));
        ip(&format!("-n {} route add 10.96.0.10/32 dev va", ns.0));
        let path = std::path::PathBuf::from(format!("/var/run/netns/{}", ns.0));
        let port = |vip: &str, port: u16, ep: &str| ServicePort {
            id: format!("t/{port}"),
            cluster_ip: vip.parse().unwrap(),
            protocol: Protocol::Udp,
            port,
            endpoints: vec![ep.parse().unwrap()],
        };
        let t = table(&[port("10.96.0.10", 80, "10.1.0.3:8080"), port("10.96.0.10", 81, "10.1.0.2:8081")]);
        Nft::open_in(&path).unwrap().apply(&t).unwrap();
        crate::netns::run_in(&path, || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.send_to(b"x", "10.96.0.10:80").unwrap();
            s.send_to(b"x", "10.96.0.10:81").unwrap();
            s.send_to(b"x", "10.1.0.3:9999").unwrap(); // not through the proxy: kept
        })
        .unwrap();
        let gone: IpAddr = "10.1.0.3".parse().unwrap();
        assert_eq!(flush_udp_to(&path, &[gone]).unwrap(), 1);
        assert_eq!(flush_udp_to(&path, &[gone]).unwrap(), 0, "deleted");
        assert_eq!(flush_udp_to(&path, &["10.1.0.2".parse().unwrap()]).unwrap(), 1, "the other endpoint's was kept");
    }
}
