//! Who the client is. Without proxies, the TCP peer. Behind proxies we trust, the address they
//! report in `X-Forwarded-For`: the right-most one that is not itself a trusted proxy (each
//! proxy appends the address it received the request from, so everything to the left of the
//! first untrusted hop was written by the client and proves nothing). The login throttle, the
//! per-client stream limit and the request log all use this one answer.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::str::FromStr;

use actix_web::HttpRequest;
use actix_web::http::header::HeaderMap;
use ipnet::IpNet;

use crate::state::AppState;

/// The proxies whose `X-Forwarded-For` is believed (`NEWSPAPER_TRUSTED_PROXIES`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl FromStr for TrustedProxies {
    type Err = String;

    /// Comma-separated addresses and CIDR blocks: `127.0.0.1, 10.0.0.0/8, ::1`.
    fn from_str(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
            .map(|part| {
                part.parse::<IpNet>()
                    .or_else(|_| part.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("not an address or CIDR block: {part:?}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(TrustedProxies)
    }
}

impl fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        f.write_str(&parts.join(","))
    }
}

impl TrustedProxies {
    /// Whether `addr` is one of the trusted proxies.
    pub fn contains(&self, addr: &IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&to_canonical(*addr)))
    }

    /// The client of a request that came from `peer` with these headers.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = to_canonical(peer);
        if !self.contains(&peer) {
            return peer;
        }
        // Right to left over every X-Forwarded-For header, in order.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        let mut nearest_trusted = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop.trim()) {
                Some(addr) if self.contains(&addr) => nearest_trusted = addr,
                Some(addr) => return addr,
                // A proxy we trust wrote nonsense: the client is whoever handed it to them.
                None => return nearest_trusted,
            }
        }
        nearest_trusted
    }
}

/// An address as proxies write it: plain, `[v6]`, or with a port.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(addr) = hop.parse::<IpAddr>() {
        return Some(to_canonical(addr));
    }
    if let Ok(socket) = hop.parse::<std::net::SocketAddr>() {
        return Some(to_canonical(socket.ip()));
    }
    hop.strip_prefix('[')?.strip_suffix(']')?.parse::<IpAddr>().ok().map(to_canonical)
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) as the IPv4 address they are.
fn to_canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client address of a request, by the trusted proxies of the app's settings.
pub fn client_ip(req: &HttpRequest) -> IpAddr {
    let peer = req.peer_addr().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
    match req.app_data::<actix_web::web::Data<AppState>>() {
        Some(state) => state.settings.trusted_proxies.client(peer, req.headers()),
        None => peer,
    }
}

#[cfg(test)]
mod tests {
    use actix_web::http::header::{HeaderName, HeaderValue};

    use super::*;

    fn headers(values: &[&'static str]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for value in values {
            map.append(HeaderName::from_static("x-forwarded-for"), HeaderValue::from_static(value));
        }
        map
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_the_client_whatever_they_claim() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().unwrap();
        assert_eq!(trusted.client(ip("203.0.113.9"), &headers(&["1.2.3.4"])), ip("203.0.113.9"));
        assert_eq!(
            TrustedProxies::default().client(ip("127.0.0.1"), &headers(&["1.2.3.4"])),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_right_most_untrusted_hop_is_the_client() {
        let trusted: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        let peer = ip("127.0.0.1");
        // The client lied ("1.1.1.1"); nginx appended the real address; a second proxy too.
        let xff = headers(&["1.1.1.1, 198.51.100.7", "10.0.0.5"]);
        assert_eq!(trusted.client(peer, &xff), ip("198.51.100.7"));
        assert_eq!(trusted.client(peer, &headers(&["[2001:db8::1]:443"])), ip("2001:db8::1"));
        assert_eq!(trusted.client(peer, &headers(&["198.51.100.7:5000"])), ip("198.51.100.7"));
        assert_eq!(trusted.client(peer, &HeaderMap::new()), peer, "no header: the proxy itself");
        assert_eq!(trusted.client(peer, &headers(&["10.0.0.9"])), ip("10.0.0.9"), "all trusted");
        assert_eq!(trusted.client(peer, &headers(&["garbage, 10.0.0.9"])), ip("10.0.0.9"));
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.1"), &headers(&["198.51.100.7"])),
            ip("198.51.100.7")
        );
    }

    #[test]
    fn the_setting_parses_addresses_and_blocks_and_refuses_the_rest() {
        let parsed: TrustedProxies = " 127.0.0.1 ,::1,10.0.0.0/8,".parse().unwrap();
        assert_eq!(parsed.to_string(), "127.0.0.1/32,::1/128,10.0.0.0/8");
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.local".parse::<TrustedProxies>().is_err());
        assert_eq!("".parse::<TrustedProxies>().unwrap(), TrustedProxies::default());
    }
}
