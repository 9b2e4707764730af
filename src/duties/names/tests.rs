use super::*;

use hickory_proto::rr::rdata::A;
use hickory_proto::rr::Record;

const EXPECTED: Ipv4Addr = Ipv4Addr::new(127, 1, 2, 5);

fn response(code: ResponseCode, ips: &[Ipv4Addr]) -> Message {
    let mut m = Message::response(7, hickory_proto::op::OpCode::Query);
    m.metadata.response_code = code;
    for ip in ips {
        m.add_answer(Record::from_rdata(
            Name::from_ascii("api.shop.z.test.").unwrap(),
            5,
            RData::A(A(*ip)),
        ));
    }
    m
}

#[test]
fn an_answer_is_judged_against_the_expected_ip() {
    assert_eq!(
        outcome(&response(ResponseCode::NoError, &[EXPECTED]), EXPECTED),
        Outcome::Resolves
    );
    let other = Ipv4Addr::new(10, 0, 0, 9);
    assert_eq!(
        outcome(&response(ResponseCode::NoError, &[other]), EXPECTED),
        Outcome::WrongIp(vec![other])
    );
    assert_eq!(
        outcome(&response(ResponseCode::NoError, &[]), EXPECTED),
        Outcome::NoAddress
    );
    assert_eq!(
        outcome(&response(ResponseCode::NXDomain, &[]), EXPECTED),
        Outcome::NxDomain
    );
    assert_eq!(
        outcome(&response(ResponseCode::ServFail, &[]), EXPECTED),
        Outcome::Rcode("SERVFAIL".into())
    );
}

fn check(udp: Outcome, tcp: Outcome) -> NameCheck {
    NameCheck {
        fqdn: "api.shop.z.test".into(),
        expected: EXPECTED,
        udp,
        tcp,
    }
}

#[test]
fn a_problem_names_the_reason_and_the_transport() {
    assert_eq!(check(Outcome::Resolves, Outcome::Resolves).problem(), None);
    assert_eq!(
        check(Outcome::NxDomain, Outcome::NxDomain)
            .problem()
            .unwrap(),
        "NXDOMAIN (UDP and TCP)"
    );
    let wrong = Outcome::WrongIp(vec![Ipv4Addr::new(10, 0, 0, 9)]);
    assert_eq!(
        check(wrong.clone(), wrong).problem().unwrap(),
        "resolves to 10.0.0.9, expected 127.1.2.5 (UDP and TCP)"
    );
    assert_eq!(
        check(Outcome::Resolves, Outcome::Timeout)
            .problem()
            .unwrap(),
        "UDP: resolves to 127.1.2.5; TCP: timed out after 2s"
    );
}

#[test]
fn the_condition_names_every_failing_name() {
    let server = Ipv4Addr::new(127, 1, 2, 53);
    let ok = NameCheck {
        fqdn: "orders.shop.z.test".into(),
        ..check(Outcome::Resolves, Outcome::Resolves)
    };
    let ready = duty(server, std::slice::from_ref(&ok));
    assert!(ready.ready, "{ready:?}");
    assert_eq!(ready.condition_type, types::NAMES);
    let failing = duty(server, &[ok, check(Outcome::NxDomain, Outcome::NxDomain)]);
    assert!(!failing.ready && failing.progressing);
    assert_eq!(failing.reason, "NamesDoNotResolve");
    assert!(
        failing.message.starts_with(
            "1 of 2 name(s) do not resolve through the DNS Service 127.1.2.53: api.shop.z.test: NXDOMAIN (UDP and TCP)."
        ),
        "{}",
        failing.message
    );
    let many: Vec<NameCheck> = (0..12)
        .map(|i| NameCheck {
            fqdn: format!("s{i}.shop.z.test"),
            ..check(Outcome::Timeout, Outcome::Timeout)
        })
        .collect();
    let message = duty(server, &many).message;
    assert!(message.contains("s9.shop.z.test") && !message.contains("s10.shop"));
    assert!(
        message.contains("and 2 more (see status.services)"),
        "{message}"
    );
    assert!(duty(server, &[]).ready);
}

#[test]
fn only_linked_services_with_an_ip_are_checked_and_recorded() {
    let entry = |name: &str, state, ip: Option<&str>| LinkedServiceStatus {
        namespace: "shop".into(),
        name: name.into(),
        state,
        internal_ip: ip.map(str::to_string),
        fqdn: format!("{name}.shop.z.test"),
        ..Default::default()
    };
    let mut entries = vec![
        entry("api", LinkedServiceState::Linked, Some("127.1.2.5")),
        entry("web", LinkedServiceState::Pending, None),
        entry("pub", LinkedServiceState::Skipped, Some("20.50.0.4")),
    ];
    assert_eq!(
        expected(&entries),
        [("api.shop.z.test".to_string(), EXPECTED)]
    );
    record(&mut entries, &[check(Outcome::NxDomain, Outcome::NxDomain)]);
    assert_eq!(entries[0].name_resolves, Some(false));
    assert_eq!(
        entries[0].name_error.as_deref(),
        Some("NXDOMAIN (UDP and TCP)")
    );
    assert_eq!(
        (entries[1].name_resolves, &entries[1].name_error),
        (None, &None)
    );
}

/// A DNS server on 127.0.0.1 that answers every query with `answer` over UDP and TCP.
async fn fake_server(answer: fn(&Message) -> Message) -> SocketAddr {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = udp.recv_from(&mut buf).await {
            let query = Message::from_vec(&buf[..n]).unwrap();
            let reply = answer(&query).to_vec().unwrap();
            let _ = udp.send_to(&reply, peer).await;
        }
    });
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = tcp.accept().await {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.unwrap();
            let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut query).await.unwrap();
            let reply = answer(&Message::from_vec(&query).unwrap())
                .to_vec()
                .unwrap();
            stream
                .write_all(&(reply.len() as u16).to_be_bytes())
                .await
                .unwrap();
            stream.write_all(&reply).await.unwrap();
        }
    });
    addr
}

fn reply_with(query: &Message, code: ResponseCode, ip: Option<Ipv4Addr>) -> Message {
    let mut m = Message::response(query.metadata.id, query.metadata.op_code);
    m.metadata.response_code = code;
    m.add_queries(query.queries.clone());
    if let Some(ip) = ip {
        m.add_answer(Record::from_rdata(
            query.queries[0].name().clone(),
            5,
            RData::A(A(ip)),
        ));
    }
    m
}

#[tokio::test]
async fn queries_go_over_udp_and_tcp_to_the_given_server() {
    let right = fake_server(|q| reply_with(q, ResponseCode::NoError, Some(EXPECTED))).await;
    for transport in [Transport::Udp, Transport::Tcp] {
        assert_eq!(
            ask(right, "api.shop.z.test", EXPECTED, transport).await,
            Outcome::Resolves,
            "{transport}"
        );
    }
    let nx = fake_server(|q| reply_with(q, ResponseCode::NXDomain, None)).await;
    assert_eq!(
        ask(nx, "api.shop.z.test", EXPECTED, Transport::Tcp).await,
        Outcome::NxDomain
    );
    let wrong =
        fake_server(|q| reply_with(q, ResponseCode::NoError, Some(Ipv4Addr::LOCALHOST))).await;
    assert_eq!(
        ask(wrong, "api.shop.z.test", EXPECTED, Transport::Udp).await,
        Outcome::WrongIp(vec![Ipv4Addr::LOCALHOST])
    );
}

#[tokio::test]
async fn a_silent_server_times_out_and_a_closed_port_refuses() {
    // Bound, never read: UDP queries go unanswered. Its TCP port has no listener.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap();
    assert_eq!(
        ask(addr, "api.shop.z.test", EXPECTED, Transport::Udp).await,
        Outcome::Timeout
    );
    assert_eq!(
        ask(addr, "api.shop.z.test", EXPECTED, Transport::Tcp).await,
        Outcome::Failed("connection refused".into())
    );
}
