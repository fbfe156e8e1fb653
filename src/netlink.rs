//! Routes and links in a pod's network namespace over rtnetlink (a synchronous
//! `NETLINK_ROUTE` socket, never an exec of `ip`): moving the default route onto an attachment
//! (NPWG `default-route`) and putting back what was there when that attachment goes away;
//! removing a device whose delegate can no longer be asked to.

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::LinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use serde::{Deserialize, Serialize};
use std::io;
use std::net::IpAddr;
use std::path::Path;

/// A default route as it was before kactus moved it, enough to put it back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DefaultRoute {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    pub dev: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metric: Option<u32>,
    pub ipv6: bool,
}

/// Makes each gateway the pod's default route for its address family, on device `ifname`
/// of the namespace at `netns`. Families without a gateway keep their default route. Returns
/// the default routes it replaced, for [`restore_default_routes`]; on failure the pod's
/// routes are put back as they were.
pub fn move_default_routes(netns: &Path, ifname: &str, gateways: &[IpAddr]) -> io::Result<Vec<DefaultRoute>> {
    let (ifname, gateways) = (ifname.to_string(), gateways.to_vec());
    crate::netns::run_in(netns, move || {
        let mut rtnl = Rtnl::open()?;
        let oif = index_of(&ifname)?;
        let mut replaced = Vec::new();
        if let Err(e) = move_here(&mut rtnl, oif, &gateways, &mut replaced) {
            for gw in &gateways {
                let ours = default_route_message(gw.is_ipv6(), Some(*gw), oif, None);
                let _ = rtnl.request(RouteNetlinkMessage::DelRoute(ours), NLM_F_ACK);
            }
            let _ = restore_here(&mut rtnl, &replaced);
            return Err(io::Error::new(e.kind(), format!("default route via {gateways:?} dev {ifname}: {e}")));
        }
        Ok(replaced)
    })?
}

fn move_here(rtnl: &mut Rtnl, oif: u32, gateways: &[IpAddr], replaced: &mut Vec<DefaultRoute>) -> io::Result<()> {
    for ipv6 in [false, true] {
        let Some(gw) = gateways.iter().copied().find(|g| g.is_ipv6() == ipv6) else { continue };
        let old = rtnl.default_routes(ipv6)?;
        for route in &old {
            let (g, o, metric) = route_key(route);
            if !(g == Some(gw) && o == Some(oif)) {
                replaced.push(DefaultRoute { gateway: g, dev: name_of(o), metric, ipv6 });
            }
        }
        // Add (or replace the same-metric one) first, so the pod is never without one.
        let new = default_route_message(ipv6, Some(gw), oif, None);
        rtnl.request(RouteNetlinkMessage::NewRoute(new), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)?;
        for mut route in old {
            let (g, o, _) = route_key(&route);
            if g == Some(gw) && o == Some(oif) {
                continue;
            }
            route.attributes.retain(|a| {
                matches!(a, RouteAttribute::Gateway(_) | RouteAttribute::Oif(_) | RouteAttribute::Priority(_))
            });
            match rtnl.request(RouteNetlinkMessage::DelRoute(route), NLM_F_ACK) {
                // The replace above already took the one with the same metric.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                other => other.map(drop)?,
            }
        }
    }
    Ok(())
}

/// Puts back default routes saved by [`move_default_routes`], best effort per route: a
/// device that is gone takes its route with it; one already present is fine.
pub fn restore_default_routes(netns: &Path, routes: &[DefaultRoute]) -> io::Result<()> {
    let routes = routes.to_vec();
    crate::netns::run_in(netns, move || restore_here(&mut Rtnl::open()?, &routes))?
}

fn restore_here(rtnl: &mut Rtnl, routes: &[DefaultRoute]) -> io::Result<()> {
    for r in routes {
        let Ok(oif) = index_of(&r.dev) else { continue };
        let msg = default_route_message(r.ipv6, r.gateway, oif, r.metric);
        match rtnl.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            other => other.map(drop)?,
        }
    }
    Ok(())
}

/// Deletes the device `ifname` in the namespace at `netns`; `false` if there is none.
pub fn delete_link(netns: &Path, ifname: &str) -> io::Result<bool> {
    let ifname = ifname.to_string();
    crate::netns::run_in(netns, move || {
        let Ok(index) = nix::net::if_::if_nametoindex(ifname.as_str()) else { return Ok(false) };
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        match Rtnl::open()?.request(RouteNetlinkMessage::DelLink(msg), NLM_F_ACK) {
            // Gone between the look-up and the request: the same outcome.
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(false),
            other => other.map(|_| true).map_err(|e| io::Error::new(e.kind(), format!("delete device {ifname}: {e}"))),
        }
    })?
}

/// Which of `names` are no network device in the namespace at `netns` (a DPDK or vhost-user
/// attachment's name: nftables cannot filter its traffic there).
pub fn absent_devices(netns: &Path, names: &[String]) -> io::Result<Vec<String>> {
    let names = names.to_vec();
    crate::netns::run_in(netns, move || {
        let mut absent = Vec::new();
        for name in names {
            match nix::net::if_::if_nametoindex(name.as_str()) {
                Ok(_) => {}
                Err(nix::errno::Errno::ENODEV) => absent.push(name),
                Err(e) => return Err(io::Error::new(io::Error::from(e).kind(), format!("device {name}: {e}"))),
            }
        }
        Ok(absent)
    })?
}

/// The routing protocol number that marks the host routes kactus's in-pod Service proxy
/// adds (`ip route show proto 107`): how a restarted podagent or `kactus uninstall` finds
/// them without any state of its own.
pub const SERVICE_ROUTE_PROTOCOL: u8 = 107;

/// A host route to a Service's ClusterIP over the pod's device on the Service's network,
/// with the pod's address there as source (so the backend sees that address).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceRoute {
    pub cluster_ip: IpAddr,
    pub dev: String,
    pub src: IpAddr,
}

/// Makes the pod's kactus-marked host routes exactly `routes`: adds or replaces each of them
/// and deletes every other route marked [`SERVICE_ROUTE_PROTOCOL`] (an empty `routes` removes
/// them all). Each route is one netlink request; a device that is gone fails its route only.
pub fn sync_service_routes(netns: &Path, routes: &[ServiceRoute]) -> io::Result<()> {
    let routes = routes.to_vec();
    crate::netns::run_in(netns, move || {
        let mut rtnl = Rtnl::open()?;
        let mut errors = Vec::new();
        let mut wanted = Vec::new();
        for r in &routes {
            let made = index_of(&r.dev).and_then(|oif| {
                let msg = service_route_message(r.cluster_ip, Some(oif), Some(r.src));
                rtnl.request(RouteNetlinkMessage::NewRoute(msg), NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE)?;
                Ok(oif)
            });
            match made {
                Ok(oif) => wanted.push((r.cluster_ip, oif)),
                Err(e) => errors.push(format!("route {} dev {} src {}: {e}", r.cluster_ip, r.dev, r.src)),
            }
        }
        for ipv6 in [false, true] {
            for route in rtnl.marked_routes(ipv6)? {
                let (dst, oif) = (route_destination(&route), route_key(&route).1);
                if dst.is_some_and(|d| wanted.iter().any(|(w, o)| *w == d && Some(*o) == oif)) {
                    continue;
                }
                match rtnl.request(RouteNetlinkMessage::DelRoute(route), NLM_F_ACK) {
                    Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
                    Err(e) => errors.push(format!("delete route to {dst:?}: {e}")),
                    Ok(_) => {}
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(io::Error::other(errors.join("; ")))
        }
    })?
}

fn service_route_message(dst: IpAddr, oif: Option<u32>, src: Option<IpAddr>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if dst.is_ipv6() { AddressFamily::Inet6 } else { AddressFamily::Inet };
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Other(SERVICE_ROUTE_PROTOCOL);
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = RouteScope::Link;
    msg.header.destination_prefix_length = if dst.is_ipv6() { 128 } else { 32 };
    msg.attributes.push(RouteAttribute::Destination(RouteAddress::from(dst)));
    if let Some(oif) = oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(src) = src {
        msg.attributes.push(RouteAttribute::PrefSource(RouteAddress::from(src)));
    }
    msg
}

fn route_destination(route: &RouteMessage) -> Option<IpAddr> {
    route.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(a)) => Some(IpAddr::V4(*a)),
        RouteAttribute::Destination(RouteAddress::Inet6(a)) => Some(IpAddr::V6(*a)),
        _ => None,
    })
}

fn index_of(ifname: &str) -> io::Result<u32> {
    nix::net::if_::if_nametoindex(ifname)
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("device {ifname}: {e}")))
}

fn name_of(index: Option<u32>) -> String {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    let Some(index) = index else { return String::new() };
    // SAFETY: buf has IF_NAMESIZE bytes, as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return String::new();
    }
    // SAFETY: if_indextoname wrote a NUL-terminated name into buf.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

fn default_route_message(ipv6: bool, gateway: Option<IpAddr>, oif: u32, metric: Option<u32>) -> RouteMessage {
    let mut msg = RouteMessage::default();
    msg.header.address_family = if ipv6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.kind = RouteType::Unicast;
    msg.header.scope = if gateway.is_some() { RouteScope::Universe } else { RouteScope::Link };
    if let Some(gw) = gateway {
        msg.attributes.push(RouteAttribute::Gateway(RouteAddress::from(gw)));
    }
    msg.attributes.push(RouteAttribute::Oif(oif));
    if let Some(m) = metric {
        msg.attributes.push(RouteAttribute::Priority(m));
    }
    msg
}

/// (gateway, output device index, metric) of a route.
fn route_key(route: &RouteMessage) -> (Option<IpAddr>, Option<u32>, Option<u32>) {
    let (mut gw, mut oif, mut metric) = (None, None, None);
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(IpAddr::V4(*a)),
            RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = Some(IpAddr::V6(*a)),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    (gw, oif, metric)
}

/// A route netlink socket in the calling thread's network namespace.
struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Rtnl { socket, seq: 0 })
    }

    /// The main table's default routes of one family.
    fn default_routes(&mut self, ipv6: bool) -> io::Result<Vec<RouteMessage>> {
        self.main_routes(ipv6, |r| r.header.destination_prefix_length == 0 && r.header.kind == RouteType::Unicast)
    }

    /// The main table's routes of one family that kactus's Service proxy marked.
    fn marked_routes(&mut self, ipv6: bool) -> io::Result<Vec<RouteMessage>> {
        self.main_routes(ipv6, |r| r.header.protocol == RouteProtocol::Other(SERVICE_ROUTE_PROTOCOL))
    }

    /// The main table's routes of one family that `wanted` keeps (one dump).
    fn main_routes(&mut self, ipv6: bool, wanted: impl Fn(&RouteMessage) -> bool) -> io::Result<Vec<RouteMessage>> {
        let mut query = RouteMessage::default();
        query.header.address_family = if ipv6 { AddressFamily::Inet6 } else { AddressFamily::Inet };
        let all = self.request(RouteNetlinkMessage::GetRoute(query), NLM_F_DUMP)?;
        Ok(all
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN && wanted(&r) => {
                    Some(r)
                }
                _ => None,
            })
            .collect())
    }

    /// Sends one request (with `NLM_F_ACK` or `NLM_F_DUMP` in `flags`) and collects the
    /// answers: a dump's messages up to `DONE`, or the kernel's ACK; an error answer becomes
    /// the matching `io::Error`.
    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq += 1;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            let mut offset = 0;
            while offset < data.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("netlink reply: {e}")))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(io::ErrorKind::InvalidData, "netlink reply of length 0"));
                }
                offset += (len + 3) & !3;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                            None => Ok(out),
                        }
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// A throwaway netns with `va` (10.1.0.2/24, the default route via 10.1.0.1) and `vc`
    /// (10.2.0.2/24); removed on drop.
    struct Ns(String);

    impl Ns {
        fn new(tag: &str) -> Ns {
            let ns = Ns(format!("kactus-nl-{tag}-{}", std::process::id()));
            for cmd in [
                format!("netns add {}", ns.0),
                format!("-n {} link add va type veth peer name vb", ns.0),
                format!("-n {} link add vc type veth peer name vd", ns.0),
                format!("-n {} link set va up", ns.0),
                format!("-n {} link set vc up", ns.0),
                format!("-n {} link set vb up", ns.0),
                format!("-n {} link set vd up", ns.0),
                format!("-n {} addr add 10.1.0.2/24 dev va", ns.0),
                format!("-n {} addr add 10.2.0.2/24 dev vc", ns.0),
                format!("-n {} route add default via 10.1.0.1 dev va", ns.0),
            ] {
                let ok = Command::new("ip").args(cmd.split(' ')).status().is_ok_and(|s| s.success());
                assert!(ok, "ip {cmd}");
            }
            ns
        }

        fn path(&self) -> std::path::PathBuf {
            Path::new("/var/run/netns").join(&self.0)
        }

        fn defaults(&self) -> String {
            let out = Command::new("ip").args(["-n", &self.0, "-4", "route", "show", "default"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        }
    }

    impl Drop for Ns {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
        }
    }

    #[test]
    fn the_default_route_moves_and_comes_back_when_the_device_goes() {
        let ns = Ns::new("move");
        let replaced = move_default_routes(&ns.path(), "vc", &["10.2.0.1".parse().unwrap()]).unwrap();
        assert_eq!(ns.defaults(), "default via 10.2.0.1 dev vc");
        assert_eq!(
            replaced,
            vec![DefaultRoute {
                gateway: Some("10.1.0.1".parse().unwrap()),
                dev: "va".into(),
                metric: None,
                ipv6: false
            }]
        );
        let _ = Command::new("ip").args(["-n", &ns.0, "link", "del", "vc"]).status();
        restore_default_routes(&ns.path(), &replaced).unwrap();
        assert!(ns.defaults().starts_with("default via 10.1.0.1 dev va"), "{}", ns.defaults());
    }

    #[test]
    fn a_device_is_deleted_by_name_and_a_missing_one_is_no_error() {
        let ns = Ns::new("dellink");
        assert!(delete_link(&ns.path(), "vc").unwrap());
        assert!(!delete_link(&ns.path(), "vc").unwrap());
        let out = Command::new("ip").args(["-n", &ns.0, "-o", "link", "show"]).output().unwrap();
        let links = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(links.contains("va@vb") && !links.contains("vc@"), "{links}");
    }

    #[test]
    fn service_routes_are_made_exactly_and_only_kactus_marked_ones_are_removed() {
        let ns = Ns::new("svcroutes");
        let show = || {
            let out = Command::new("ip").args(["-n", &ns.0, "-4", "route", "show", "proto", "107"]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let _ = Command::new("ip").args(["-n", &ns.0, "route", "add", "10.96.9.9/32", "dev", "va"]).status();
        let route = |ip: &str, dev: &str, src: &str| ServiceRoute {
            cluster_ip: ip.parse().unwrap(),
            dev: dev.into(),
            src: src.parse().unwrap(),
        };
        sync_service_routes(
            &ns.path(),
            &[route("10.96.0.10", "vc", "10.2.0.2"), route("10.96.0.11", "vc", "10.2.0.2")],
        )
        .unwrap();
        let lines: Vec<String> = show().lines().map(|l| l.trim().to_string()).collect();
        assert_eq!(lines, ["10.96.0.10 dev vc scope link src 10.2.0.2", "10.96.0.11 dev vc scope link src 10.2.0.2"]);
        sync_service_routes(&ns.path(), &[route("10.96.0.11", "va", "10.1.0.2")]).unwrap();
        assert_eq!(show(), "10.96.0.11 dev va scope link src 10.1.0.2");
        sync_service_routes(&ns.path(), &[]).unwrap();
        assert_eq!(show(), "");
        let out = Command::new("ip").args(["-n", &ns.0, "-4", "route", "show", "10.96.9.9"]).output().unwrap();
        assert!(!out.stdout.is_empty(), "a route kactus did not mark stays");
    }

    #[test]
    fn an_unreachable_gateway_fails_and_leaves_the_default_route_alone() {
        let ns = Ns::new("unreach");
        let e = move_default_routes(&ns.path(), "vc", &["10.9.9.9".parse().unwrap()]).unwrap_err();
        assert!(e.to_string().contains("10.9.9.9"), "{e}");
        assert!(ns.defaults().starts_with("default via 10.1.0.1 dev va"), "{}", ns.defaults());
    }
}
