//! Where an agent may connect to: the allow-list's rules, the names an agent
//! may ask for, and the addresses no agent reaches whatever the list says.
//!
//! The egress proxy (in the `icarus` crate) reads requests, resolves names and
//! moves bytes; every decision it takes is made here, without I/O, so that
//! the rules can be read and tested on their own:
//!
//! 1. [`Destination::parse`]: the host an agent named must be a DNS name.
//!    IP literals are refused in every spelling the system resolver would
//!    accept (`127.0.0.1`, `[::1]`, `2130706433`, `0x7f.1`): an agent
//!    names what it wants, and the list speaks of names.
//! 2. [`AllowList::allows`]: the name and port must match a rule.
//! 3. [`forbidden_address`]: every address the name resolves to must be a
//!    public one. A listed name that resolves to loopback, a private
//!    network, link-local (the cloud metadata address) and the like is
//!    refused: a name an agent cannot choose can still be pointed anywhere
//!    by whoever controls its DNS. (Addresses the operator maps names to
//!    in configuration are the operator's word and not checked.)
//!
//! An allow-list is configured per role, and a job may narrow it
//! ([`AllowList::narrowed_to`]) but never widen it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// The ports a rule without one allows: HTTP and HTTPS.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

/// The longest DNS name (RFC 1035), in characters.
const MAX_NAME_LEN: usize = 253;

/// The most rules a job may narrow its agents' egress to.
pub const MAX_JOB_RULES: usize = 100;

/// The longest rule a person may add (`*.`, the name and `:port` within a
/// DNS name's length).
pub const MAX_RULE_CHARS: usize = MAX_NAME_LEN;

/// Exactly the rules [`Rule`] reads, as a pattern (in the syntax ECMA 262
/// and Rust read alike), for a schema to state: `*.` or not, DNS labels
/// whose last starts with a letter, an optional final dot, an optional port
/// from 1 to 65535. Within [`MAX_RULE_CHARS`], every match parses.
pub const RULE_PATTERN: &str = concat!(
    r"^(\*\.)?([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*",
    r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?",
    r"(:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?$"
);

/// A DNS name an agent asked to connect to: lower-case ASCII letters,
/// digits, hyphens and dots, without a trailing dot, never an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination(String);

impl Destination {
    /// Checks the host part of a request (`CONNECT host:port` or a URL's
    /// host). Names that are not plain ASCII DNS names are refused rather
    /// than interpreted: an internationalised name must be sent in its
    /// `xn--` form, as clients do.
    pub fn parse(host: &str) -> Result<Destination, Refusal> {
        let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if looks_like_an_address(&name) {
            return Err(Refusal::AddressLiteral(host.to_owned()));
        }
        if !is_dns_name(&name) {
            return Err(Refusal::InvalidName(host.to_owned()));
        }
        Ok(Destination(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP literal in any form a resolver might accept: dotted or bracketed
/// addresses, and names whose last label starts with a digit — no top-level
/// domain does, while `getaddrinfo` reads `2130706433`, `127.1` and
/// `0x7f.0.0.1` as addresses.
fn looks_like_an_address(name: &str) -> bool {
    let unbracketed = name.trim_start_matches('[').trim_end_matches(']');
    if unbracketed.parse::<IpAddr>().is_ok() || name.contains(':') {
        return true;
    }
    name.rsplit('.')
        .next()
        .and_then(|last| last.chars().next())
        .is_some_and(|first| first.is_ascii_digit())
}

fn is_dns_name(name: &str) -> bool {
    let label_ok = |label: &str| {
        (1..=63).contains(&label.len())
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    !name.is_empty() && name.len() <= MAX_NAME_LEN && name.split('.').all(label_ok)
}

/// Which names a rule matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Names {
    /// Exactly this name.
    Exact(String),
    /// Any name below this one (`*.example.com`: `a.example.com`,
    /// `a.b.example.com`), not the name itself.
    Below(String),
}

impl Names {
    fn matches(&self, name: &str) -> bool {
        match self {
            Names::Exact(exact) => name == exact,
            Names::Below(parent) => name
                .strip_suffix(parent.as_str())
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
        }
    }

    /// Whether every name `other` matches, this matches too.
    fn covers(&self, other: &Names) -> bool {
        match other {
            Names::Exact(name) => self.matches(name),
            Names::Below(parent) => match self {
                Names::Exact(_) => false,
                Names::Below(mine) => parent == mine || self.matches(parent),
            },
        }
    }
}

/// One entry of an allow-list: `name`, `*.name` (any name below it), each
/// with an optional `:port`; without one, ports 80 and 443.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    names: Names,
    port: Option<u16>,
}

impl Rule {
    fn allows_port(&self, port: u16) -> bool {
        match self.port {
            Some(allowed) => allowed == port,
            None => DEFAULT_PORTS.contains(&port),
        }
    }

    fn covers(&self, other: &Rule) -> bool {
        let ports_covered = match other.port {
            Some(port) => self.allows_port(port),
            None => DEFAULT_PORTS.iter().all(|&port| self.allows_port(port)),
        };
        ports_covered && self.names.covers(&other.names)
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(entry: &str) -> Result<Rule, RuleError> {
        let invalid = |why: &str| RuleError {
            entry: entry.to_owned(),
            why: why.to_owned(),
        };
        let trimmed = entry.trim();
        let (host, port) = match trimmed.rsplit_once(':') {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|&p| p > 0)
                    .ok_or_else(|| invalid("the port must be a number from 1 to 65535"))?;
                (host, Some(port))
            }
            None => (trimmed, None),
        };
        let (below, name) = match host.strip_prefix("*.") {
            Some(parent) => (true, parent),
            None => (false, host),
        };
        let destination = Destination::parse(name).map_err(|_| {
            invalid("expected a DNS name or `*.` and a DNS name, with an optional `:port`")
        })?;
        let name = destination.0;
        let names = if below {
            Names::Below(name)
        } else {
            Names::Exact(name)
        };
        Ok(Rule { names, port })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.names {
            Names::Exact(name) => f.write_str(name)?,
            Names::Below(parent) => write!(f, "*.{parent}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// An allow-list entry that is not a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    pub entry: String,
    pub why: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "allow-list entry {:?}: {}", self.entry, self.why)
    }
}

impl std::error::Error for RuleError {}

/// The names and ports agents may connect to. Empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowList {
    rules: Vec<Rule>,
}

impl AllowList {
    /// Parses every entry, refusing the list at its first bad one.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<AllowList, RuleError> {
        let rules = entries
            .iter()
            .map(|entry| entry.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(AllowList { rules })
    }

    pub fn allows(&self, destination: &Destination, port: u16) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.allows_port(port) && rule.names.matches(destination.as_str()))
    }

    /// The rules of `requested` that this list covers entirely, and the
    /// ones it does not (which a job asked for beyond its configuration):
    /// a job can narrow what its agents may reach, never widen it.
    pub fn narrowed_to(&self, requested: &AllowList) -> (AllowList, Vec<Rule>) {
        let (kept, beyond): (Vec<Rule>, Vec<Rule>) = requested
            .rules
            .iter()
            .cloned()
            .partition(|wanted| self.rules.iter().any(|rule| rule.covers(wanted)));
        (AllowList { rules: kept }, beyond)
    }

    /// This list with `rule` added (a domain a person allowed), unless a
    /// rule already covers it.
    pub fn with(mut self, rule: Rule) -> AllowList {
        if !self.rules.iter().any(|existing| existing.covers(&rule)) {
            self.rules.push(rule);
        }
        self
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }
}

/// Why the proxy refused a connection: each is shown to the agent (in the
/// proxy's 403) and recorded as the job's event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The agent named an address, not a name.
    AddressLiteral(String),
    /// Not a DNS name the proxy will look up.
    InvalidName(String),
    /// The name and port match no rule of the agent's allow-list.
    NotListed { destination: Destination, port: u16 },
    /// The name resolves to an address no agent may reach.
    ForbiddenAddress {
        destination: Destination,
        address: IpAddr,
        kind: &'static str,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::AddressLiteral(host) => write!(
                f,
                "{host:?} is an IP address; agents may connect to listed names only"
            ),
            Refusal::InvalidName(host) => write!(f, "{host:?} is not a DNS name"),
            Refusal::NotListed { destination, port } => write!(
                f,
                "{destination}:{port} is not on this agent's allow-list (an approver can allow it)"
            ),
            Refusal::ForbiddenAddress {
                destination,
                address,
                kind,
            } => write!(
                f,
                "{destination} resolves to {address}, a {kind} address no agent may reach"
            ),
        }
    }
}

impl std::error::Error for Refusal {}

/// The kind of address an agent may never reach, or `None` for a public
/// unicast one. Covers what points back into the host, its networks or
/// the cloud around it, in both IP versions, including IPv4 addresses
/// carried inside IPv6 ones (mapped, compatible, NAT64, 6to4).
pub fn forbidden_address(address: IpAddr) -> Option<&'static str> {
    match address {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(address: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = address.octets();
    let kind = if address.is_unspecified() || a == 0 {
        "this-network"
    } else if address.is_loopback() {
        "loopback"
    } else if address.is_private() {
        "private"
    } else if address.is_link_local() {
        "link-local (cloud metadata)"
    } else if a == 100 && (64..128).contains(&b) {
        "shared (carrier-grade NAT)"
    } else if a == 192 && b == 0 && c == 0 {
        "protocol-assignment"
    } else if address.is_documentation() {
        "documentation"
    } else if a == 198 && (b == 18 || b == 19) {
        "benchmarking"
    } else if address.is_multicast() {
        "multicast"
    } else if a >= 240 {
        "reserved"
    } else {
        return None;
    };
    Some(kind)
}

fn forbidden_v6(address: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(address) {
        return forbidden_v4(v4);
    }
    let first = address.segments()[0];
    let kind = if address.is_unspecified() {
        "unspecified"
    } else if address.is_loopback() {
        "loopback"
    } else if first & 0xfe00 == 0xfc00 {
        "unique-local (private)"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if first & 0xffc0 == 0xfec0 {
        "site-local (private)"
    } else if address.is_multicast() {
        "multicast"
    } else if first == 0x2001 && address.segments()[1] == 0x0db8 {
        "documentation"
    } else if first == 0x2001 && address.segments()[1] == 0 {
        "Teredo tunnel"
    } else if first & 0xe000 != 0x2000 {
        "reserved"
    } else {
        return None;
    };
    Some(kind)
}

/// The IPv4 address inside an IPv6 one that carries it: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) and
/// 6to4 (`2002:aabb:ccdd::/48`).
fn embedded_v4(address: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = address.segments();
    let from = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    if let Some(v4) = address.to_ipv4_mapped() {
        return Some(v4);
    }
    if s[..6] == [0; 6] && !address.is_unspecified() && !address.is_loopback() {
        return Some(from(s[6], s[7]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(from(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        return Some(from(s[1], s[2]));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(entries: &[&str]) -> AllowList {
        AllowList::parse(entries).unwrap()
    }

    fn name(host: &str) -> Destination {
        Destination::parse(host).unwrap()
    }

    #[test]
    fn an_exact_rule_allows_its_name_on_the_web_ports_only() {
        let rules = list(&["pypi.org"]);
        assert!(rules.allows(&name("pypi.org"), 443));
        assert!(rules.allows(&name("PyPI.org."), 80));
        assert!(!rules.allows(&name("pypi.org"), 22));
        assert!(!rules.allows(&name("files.pypi.org"), 443));
        assert!(!rules.allows(&name("evilpypi.org"), 443));
    }

    #[test]
    fn a_wildcard_rule_allows_names_below_it_at_any_depth_but_not_the_name_itself() {
        let rules = list(&["*.pythonhosted.org"]);
        assert!(rules.allows(&name("files.pythonhosted.org"), 443));
        assert!(rules.allows(&name("a.b.pythonhosted.org"), 443));
        assert!(!rules.allows(&name("pythonhosted.org"), 443));
        assert!(!rules.allows(&name("evilpythonhosted.org"), 443));
    }

    #[test]
    fn a_rule_with_a_port_allows_that_port_only() {
        let rules = list(&["github.com:22"]);
        assert!(rules.allows(&name("github.com"), 22));
        assert!(!rules.allows(&name("github.com"), 443));
    }

    #[test]
    fn an_empty_list_allows_nothing() {
        assert!(!AllowList::default().allows(&name("example.com"), 443));
    }

    #[test]
    fn entries_that_are_not_rules_are_refused_naming_the_entry() {
        for bad in [
            "",
            "*",
            "*.",
            "exa mple.com",
            "example.com:0",
            "example.com:99999",
            "10.0.0.1",
            "a.*.com",
            "http://x.com",
        ] {
            let error = AllowList::parse(&[bad]).unwrap_err();
            assert_eq!(error.entry, bad, "{error}");
        }
    }

    #[test]
    fn rules_print_as_they_are_written() {
        for entry in [
            "pypi.org",
            "*.github.com",
            "github.com:22",
            "*.example.org:8443",
        ] {
            assert_eq!(entry.parse::<Rule>().unwrap().to_string(), entry);
        }
    }

    #[test]
    fn ip_literals_are_refused_in_every_spelling_a_resolver_accepts() {
        for literal in [
            "127.0.0.1",
            "169.254.169.254",
            "[::1]",
            "::1",
            "2130706433",
            "127.1",
            "0x7f.0.0.1",
            "0177.0.0.1",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(
                matches!(Destination::parse(literal), Err(Refusal::AddressLiteral(_))),
                "{literal}"
            );
        }
    }

    #[test]
    fn names_that_are_not_plain_dns_names_are_refused() {
        for bad in [
            "",
            "a..b",
            "-a.com",
            "a-.com",
            "a_b.com",
            "exämple.com",
            "a b",
        ] {
            assert!(
                matches!(Destination::parse(bad), Err(Refusal::InvalidName(_))),
                "{bad:?}"
            );
        }
        let long = format!("{}.com", "a.".repeat(130));
        assert!(Destination::parse(&long).is_err());
    }

    #[test]
    fn loopback_private_link_local_and_metadata_addresses_are_forbidden() {
        for address in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:0a00:0001::1",
        ] {
            let address: IpAddr = address.parse().unwrap();
            assert!(forbidden_address(address).is_some(), "{address}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        for address in [
            "1.1.1.1",
            "151.101.0.223",
            "172.32.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            let address: IpAddr = address.parse().unwrap();
            assert_eq!(forbidden_address(address), None, "{address}");
        }
    }

    #[test]
    fn a_job_may_narrow_its_list_but_what_it_adds_beyond_it_is_left_out() {
        let configured = list(&["*.github.com", "pypi.org", "crates.io:443"]);
        let requested = list(&[
            "api.github.com",
            "*.x.github.com",
            "pypi.org",
            "crates.io",
            "evil.com",
        ]);
        let (kept, beyond) = configured.narrowed_to(&requested);
        assert_eq!(
            kept,
            list(&["api.github.com", "*.x.github.com", "pypi.org"])
        );
        let beyond: Vec<String> = beyond.iter().map(Rule::to_string).collect();
        // `crates.io` asks for port 80 as well, which only 443 covers.
        assert_eq!(beyond, ["crates.io", "evil.com"]);
    }

    #[test]
    fn a_wildcard_never_covers_a_broader_wildcard_or_its_own_parent() {
        let configured = list(&["*.x.github.com"]);
        let (kept, _) = configured.narrowed_to(&list(&["*.github.com", "x.github.com"]));
        assert_eq!(kept, AllowList::default());
    }

    #[test]
    fn an_allowed_rule_is_added_once() {
        let grown = list(&["*.github.com"])
            .with("api.github.com".parse().unwrap())
            .with("pypi.org".parse().unwrap())
            .with("pypi.org".parse().unwrap());
        assert_eq!(grown, list(&["*.github.com", "pypi.org"]));
    }
}
