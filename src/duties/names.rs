//! Duty 5: the names really resolve. The other duties say the objects were written; this one asks
//! the DNS Service, at its load-balancer IP, over UDP and TCP, for `<svc>.<ns>.<zone>` of every
//! linked Service, and says whether each answers that Service's internal load-balancer IP.
//!
//! Pure parts (what a DNS answer means, the condition) are unit-tested without a network; the
//! queries are the only I/O, bounded process-wide (see [`CONCURRENCY`] and [`QUERIES_PER_SECOND`]).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, Semaphore};
use tokio::time::Instant;

use crate::crd::{LinkedServiceState, LinkedServiceStatus};
use crate::status::{types, DutyStatus};

/// At most this many queries are in flight in the whole process, so that a link with many Services
/// (or many links at once) never floods CoreDNS, which also serves every pod in the cluster.
pub const CONCURRENCY: usize = 4;
/// And at most this many start per second, process-wide.
pub const QUERIES_PER_SECOND: u32 = 20;
/// How long one query waits for its answer (UDP) or for the connection and answer (TCP).
pub const TIMEOUT: Duration = Duration::from_secs(2);
/// A failing name is checked again this soon (CoreDNS may still be loading the override), or at
/// the resync when that is sooner.
pub const RECHECK: Duration = Duration::from_secs(10);
/// The port DNS Services serve on.
const DNS_PORT: u16 = 53;
/// At most this many failing names are named in the condition message; status.services has all.
const NAMED_IN_MESSAGE: usize = 10;

/// Why the check could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The DNS Service reports an address the check cannot query.
    #[error("the DNS Service's IP {0:?} is not an IPv4 address, so no name could be checked")]
    ServerAddress(String),
}

impl Error {
    /// Short category for metrics.
    pub fn category(&self) -> &'static str {
        match self {
            Self::ServerAddress(_) => "DnsServerAddress",
        }
    }

    /// The reason of the `NamesResolve` condition it leads to.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::ServerAddress(_) => "DnsServerAddressInvalid",
        }
    }
}

/// UDP or TCP: App Services' resolvers use both (TCP after a truncated answer), so both must work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    /// DNS over UDP.
    Udp,
    /// DNS over TCP.
    Tcp,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Udp => "UDP",
            Self::Tcp => "TCP",
        })
    }
}

/// What one query over one transport found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The answer holds the expected IP.
    Resolves,
    /// NXDOMAIN: the DNS server does not know the name.
    NxDomain,
    /// NOERROR without an A record.
    NoAddress,
    /// A records, none of them the expected IP.
    WrongIp(Vec<Ipv4Addr>),
    /// Another response code (SERVFAIL, REFUSED, ...).
    Rcode(String),
    /// No answer within [`TIMEOUT`].
    Timeout,
    /// The query could not be sent or the answer not read (e.g. TCP connection refused).
    Failed(String),
}

impl Outcome {
    /// How a person reads it, with the expected IP for a wrong answer.
    fn describe(&self, expected: Ipv4Addr) -> String {
        match self {
            Self::Resolves => format!("resolves to {expected}"),
            Self::NxDomain => "NXDOMAIN".into(),
            Self::NoAddress => "no A record (NOERROR, empty answer)".into(),
            Self::WrongIp(ips) => {
                let ips: Vec<String> = ips.iter().map(ToString::to_string).collect();
                format!("resolves to {}, expected {expected}", ips.join(", "))
            }
            Self::Rcode(code) => format!("{code} from the DNS server"),
            Self::Timeout => format!("timed out after {}s", TIMEOUT.as_secs()),
            Self::Failed(why) => why.clone(),
        }
    }
}

/// What a DNS response means for a name expected at `expected`.
pub fn outcome(response: &Message, expected: Ipv4Addr) -> Outcome {
    match response.metadata.response_code {
        ResponseCode::NoError => {}
        ResponseCode::NXDomain => return Outcome::NxDomain,
        other => return Outcome::Rcode(mnemonic(other)),
    }
    let ips: Vec<Ipv4Addr> = response
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    if ips.contains(&expected) {
        Outcome::Resolves
    } else if ips.is_empty() {
        Outcome::NoAddress
    } else {
        Outcome::WrongIp(ips)
    }
}

/// The response code as dig prints it.
fn mnemonic(code: ResponseCode) -> String {
    match code {
        ResponseCode::FormErr => "FORMERR".into(),
        ResponseCode::ServFail => "SERVFAIL".into(),
        ResponseCode::NotImp => "NOTIMP".into(),
        ResponseCode::Refused => "REFUSED".into(),
        ResponseCode::NotAuth => "NOTAUTH".into(),
        other => format!("{other} (rcode {})", u16::from(other)),
    }
}

/// One name, checked over both transports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameCheck {
    /// `<svc>.<ns>.<zone>`.
    pub fqdn: String,
    /// The Service's internal load-balancer IP.
    pub expected: Ipv4Addr,
    /// What UDP found.
    pub udp: Outcome,
    /// What TCP found.
    pub tcp: Outcome,
}

impl NameCheck {
    /// True when both transports answer the expected IP.
    pub fn resolves(&self) -> bool {
        self.udp == Outcome::Resolves && self.tcp == Outcome::Resolves
    }

    /// Why it does not resolve, naming the transport(s); `None` when it does.
    pub fn problem(&self) -> Option<String> {
        if self.resolves() {
            return None;
        }
        let (udp, tcp) = (
            self.udp.describe(self.expected),
            self.tcp.describe(self.expected),
        );
        Some(if self.udp == self.tcp {
            format!("{udp} (UDP and TCP)")
        } else {
            format!("UDP: {udp}; TCP: {tcp}")
        })
    }
}

/// The names to check: every linked Service with an internal IP, as `(fqdn, ip)`.
pub fn expected(entries: &[LinkedServiceStatus]) -> Vec<(String, Ipv4Addr)> {
    entries
        .iter()
        .filter(|e| e.state == LinkedServiceState::Linked)
        .filter_map(|e| Some((e.fqdn.clone(), e.internal_ip.as_deref()?.parse().ok()?)))
        .collect()
}

/// Writes each check into its Service's status entry; entries not checked say nothing.
pub fn record(entries: &mut [LinkedServiceStatus], checks: &[NameCheck]) {
    for entry in entries.iter_mut() {
        let check = checks.iter().find(|c| c.fqdn == entry.fqdn);
        entry.name_resolves = check.map(NameCheck::resolves);
        entry.name_error = check.and_then(NameCheck::problem);
    }
}

/// The `NamesResolve` condition for these checks against `server`.
pub fn duty(server: Ipv4Addr, checks: &[NameCheck]) -> DutyStatus {
    if checks.is_empty() {
        return DutyStatus::ready(
            types::NAMES,
            "NoNamesToCheck",
            "no linked Service has an internal IP yet, so there is no name to resolve",
        );
    }
    let failing: Vec<&NameCheck> = checks.iter().filter(|c| !c.resolves()).collect();
    if failing.is_empty() {
        return DutyStatus::ready(
            types::NAMES,
            "NamesResolve",
            format!(
                "{} name(s) resolve to their internal IPs through the DNS Service {server} over UDP and TCP",
                checks.len()
            ),
        );
    }
    let mut named: Vec<String> = failing
        .iter()
        .take(NAMED_IN_MESSAGE)
        .map(|c| format!("{}: {}", c.fqdn, c.problem().unwrap_or_default()))
        .collect();
    if failing.len() > NAMED_IN_MESSAGE {
        named.push(format!(
            "and {} more (see status.services)",
            failing.len() - NAMED_IN_MESSAGE
        ));
    }
    DutyStatus::waiting(
        types::NAMES,
        "NamesDoNotResolve",
        format!(
            "{} of {} name(s) do not resolve through the DNS Service {server}: {}. Check the CoreDNS override and that CoreDNS runs with it (kubectl -n kube-system logs deploy/coredns)",
            failing.len(),
            checks.len(),
            named.join("; ")
        ),
    )
}

// ---------------------------------------------------------------------------------------------
// Querying: the only part of this duty that touches the network.
// ---------------------------------------------------------------------------------------------

/// What the check found: the condition, and each name's result for status.services.
#[derive(Debug)]
pub struct NamesOutcome {
    /// The `NamesResolve` condition.
    pub duty: DutyStatus,
    /// One per checked name.
    pub checks: Vec<NameCheck>,
}

/// Asks the DNS Service at `server_ip` for every linked Service's name, over UDP and TCP.
pub async fn reconcile(
    entries: &[LinkedServiceStatus],
    server_ip: Option<&str>,
) -> Result<NamesOutcome, Error> {
    let Some(server_ip) = server_ip else {
        return Ok(NamesOutcome {
            duty: DutyStatus::waiting(
                types::NAMES,
                "WaitingForDnsServer",
                "the DNS Service has no load-balancer IP yet, so no name can be resolved through it",
            ),
            checks: Vec::new(),
        });
    };
    let server: Ipv4Addr = server_ip
        .parse()
        .map_err(|_| Error::ServerAddress(server_ip.to_string()))?;
    let address = SocketAddr::from((server, DNS_PORT));
    let names = expected(entries);
    let checks = futures::future::join_all(names.into_iter().map(|(fqdn, ip)| async move {
        let (udp, tcp) = tokio::join!(
            ask(address, &fqdn, ip, Transport::Udp),
            ask(address, &fqdn, ip, Transport::Tcp)
        );
        NameCheck {
            fqdn,
            expected: ip,
            udp,
            tcp,
        }
    }))
    .await;
    Ok(NamesOutcome {
        duty: duty(server, &checks),
        checks,
    })
}

/// Queries in flight, process-wide.
static IN_FLIGHT: Semaphore = Semaphore::const_new(CONCURRENCY);
/// When the next query may start, process-wide.
static NEXT_START: Mutex<Option<Instant>> = Mutex::const_new(None);

/// Waits for a query slot: one of [`CONCURRENCY`], and a start at most [`QUERIES_PER_SECOND`].
async fn paced() -> Option<tokio::sync::SemaphorePermit<'static>> {
    let permit = IN_FLIGHT.acquire().await.ok()?;
    let start = {
        let mut next = NEXT_START.lock().await;
        let now = Instant::now();
        let start = next.map_or(now, |n| n.max(now));
        *next = Some(start + Duration::from_secs(1) / QUERIES_PER_SECOND);
        start
    };
    tokio::time::sleep_until(start).await;
    Some(permit)
}

/// One A query for `fqdn` over `transport`, bounded by [`TIMEOUT`].
pub async fn ask(
    server: SocketAddr,
    fqdn: &str,
    expected: Ipv4Addr,
    transport: Transport,
) -> Outcome {
    let Ok(name) = Name::from_ascii(format!("{fqdn}.")) else {
        return Outcome::Failed(format!("{fqdn:?} is not a DNS name"));
    };
    let mut query = Message::query();
    query.metadata.recursion_desired = true;
    query.add_query(hickory_proto::op::Query::query(name, RecordType::A));
    let Ok(bytes) = query.to_vec() else {
        return Outcome::Failed(format!("could not encode a query for {fqdn}"));
    };
    let _permit = paced().await;
    let exchange = async {
        match transport {
            Transport::Udp => over_udp(server, &bytes, query.metadata.id).await,
            Transport::Tcp => over_tcp(server, &bytes).await,
        }
    };
    match tokio::time::timeout(TIMEOUT, exchange).await {
        Err(_) => Outcome::Timeout,
        Ok(Err(e)) => Outcome::Failed(match e.kind() {
            std::io::ErrorKind::ConnectionRefused => "connection refused".into(),
            _ => e.to_string(),
        }),
        Ok(Ok(answer)) => match Message::from_vec(&answer) {
            Ok(response) if response.metadata.id == query.metadata.id => {
                outcome(&response, expected)
            }
            Ok(_) => Outcome::Failed("the answer is for another query".into()),
            Err(e) => Outcome::Failed(format!("unreadable answer: {e}")),
        },
    }
}

async fn over_udp(server: SocketAddr, query: &[u8], id: u16) -> std::io::Result<Vec<u8>> {
    let socket = tokio::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await?;
    socket.connect(server).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = socket.recv(&mut buf).await?;
        // A stray datagram (a late answer to someone else) is not ours: keep waiting.
        if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn over_tcp(server: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = tokio::net::TcpStream::connect(server).await?;
    // DNS over TCP: each message is preceded by its length (RFC 1035 4.2.2).
    let len = u16::try_from(query.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(answer)
}

#[cfg(test)]
mod tests;
