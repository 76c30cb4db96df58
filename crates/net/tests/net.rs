//! Real libp2p nodes on loopback. Every wait is bounded by [`within`]; no
//! assertion depends on a sleep.

use std::future::Future;
use std::time::Duration;

use basic_net::{
    Config, Event, Keypair, Limits, Multiaddr, Net, NetError, PeerId, Protocol as Channel,
    RequestError, start,
};
use libp2p::multiaddr::Protocol;
use tokio::sync::mpsc::Receiver;

const TCP: &str = "/ip4/127.0.0.1/tcp/0";
const QUIC: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

/// Fails the test instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(20), future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct Node {
    net: Net,
    events: Receiver<Event>,
    /// First listen address, with `/p2p/<id>`.
    address: Multiaddr,
}

impl Node {
    fn peer(&self) -> PeerId {
        self.net.local_peer_id()
    }

    /// Next event matching `pick`, skipping others.
    async fn next<T>(&mut self, what: &str, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        within(what, async {
            loop {
                let event = self.events.recv().await.expect("event stream ended");
                if let Some(value) = pick(event) {
                    return value;
                }
            }
        })
        .await
    }

    async fn connected_to(&mut self, peer: PeerId) {
        self.next("connected", |e| match e {
            Event::Connected { peer: p, .. } if p == peer => Some(()),
            _ => None,
        })
        .await
    }

    async fn disconnected_from(&mut self, peer: PeerId) {
        self.next("disconnected", |e| match e {
            Event::Disconnected { peer: p } if p == peer => Some(()),
            _ => None,
        })
        .await
    }

    /// Answers every request with the reversed frame, in a task; returns
    /// the number of requests answered once the events end.
    fn serve_reversed(self) -> (Net, Multiaddr, tokio::task::JoinHandle<usize>) {
        let Node { net, mut events, address } = self;
        let task = tokio::spawn(async move {
            let mut served = 0;
            while let Some(event) = events.recv().await {
                if let Event::Request { mut frame, reply, .. } = event {
                    frame.reverse();
                    reply.send(frame).expect("reply");
                    served += 1;
                }
            }
            served
        });
        (net, address, task)
    }
}

async fn node_with(listen: &str, configure: impl FnOnce(&mut Config)) -> Node {
    logs();
    let mut config = Config::new(Keypair::generate_ed25519());
    config.listen = vec![listen.parse().expect("address")];
    configure(&mut config);
    let (net, mut events) = start(config).await.expect("start");
    let listening = within("listening", async {
        loop {
            match events.recv().await.expect("events") {
                Event::Listening { address } => return address,
                _ => continue,
            }
        }
    })
    .await;
    let address = listening.with(Protocol::P2p(net.local_peer_id()));
    Node { net, events, address }
}

async fn node(listen: &str) -> Node {
    node_with(listen, |_| {}).await
}

/// `b` dials `a`; returns once both see the connection.
async fn connect(a: &mut Node, b: &mut Node) {
    b.net.dial(a.address.clone()).await.expect("dial");
    a.connected_to(b.peer()).await;
    b.connected_to(a.peer()).await;
}

/// Polls `check` until it holds (waiting for remote state, not asserting
/// on elapsed time).
async fn until<F: Future<Output = bool>>(what: &str, mut check: impl FnMut() -> F) {
    within(what, async {
        while !check().await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

async fn request_round_trip(listen: &str) {
    let mut a = node(listen).await;
    let mut b = node(listen).await;
    connect(&mut a, &mut b).await;
    let a_peer = a.peer();
    let (_a_net, _, served) = a.serve_reversed();

    let answer =
        within("request", b.net.request(a_peer, b"hello".to_vec())).await.expect("response");
    assert_eq!(answer, b"olleh");
    let big = vec![7u8; 1 << 20];
    let answer = within("big request", b.net.request(a_peer, big.clone())).await.expect("response");
    assert_eq!(answer, big);

    let info = b.net.peers().await;
    let a_info = info.iter().find(|p| p.peer == a_peer).expect("a listed");
    assert_eq!(a_info.requests_out, 2);
    assert!(!a_info.addresses.is_empty());

    b.net.shutdown().await;
    assert!(matches!(b.net.request(a_peer, b"late".to_vec()).await, Err(RequestError::Closed)));
    _a_net.shutdown().await;
    assert_eq!(within("server ends", served).await.expect("join"), 2);
}

#[tokio::test]
async fn requests_say_which_protocol_they_came_on() {
    let mut a = node(TCP).await;
    let mut b = node(TCP).await;
    connect(&mut a, &mut b).await;
    let a_peer = a.peer();
    let Node { net: a_net, events: mut a_events, .. } = a;
    let server = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < 2 {
            if let Some(Event::Request { protocol, frame, reply, .. }) = a_events.recv().await {
                reply.send(frame).expect("reply");
                seen.push(protocol);
            }
        }
        seen
    });
    let join = within("join", b.net.request_on(Channel::Join, a_peer, b"j".to_vec())).await;
    assert_eq!(join.expect("join answer"), b"j");
    let sync = within("sync", b.net.request(a_peer, b"s".to_vec())).await;
    assert_eq!(sync.expect("sync answer"), b"s");
    assert_eq!(within("server", server).await.expect("task"), [Channel::Join, Channel::Sync]);
    a_net.shutdown().await;
}

#[tokio::test]
async fn request_response_over_tcp() {
    request_round_trip(TCP).await;
}

#[tokio::test]
async fn request_response_over_quic() {
    request_round_trip(QUIC).await;
}

#[tokio::test]
async fn oversized_request_fails_and_the_receiver_keeps_serving() {
    let mut a = node_with(TCP, |c| c.limits.max_request_bytes = 1024).await;
    let mut b = node(TCP).await;
    connect(&mut a, &mut b).await;
    let a_peer = a.peer();
    let (a_net, _, _served) = a.serve_reversed();

    let result = within("oversized", b.net.request(a_peer, vec![1u8; 4096])).await;
    assert!(result.is_err(), "oversized request must fail: {result:?}");

    let answer = within("normal after oversized", b.net.request(a_peer, b"ok".to_vec()))
        .await
        .expect("receiver still serves");
    assert_eq!(answer, b"ko");
    assert_eq!(a_net.stats().await.frames_oversized, 1);

    // Our own cap is checked before anything is sent.
    let local = b.net.request(a_peer, vec![0u8; Limits::default().max_request_bytes + 1]);
    assert!(matches!(local.await, Err(RequestError::TooLarge { .. })));
}

#[tokio::test]
async fn rate_limit_drops_requests_then_bans_the_abuser() {
    // No refill: exactly two requests are ever allowed; strikes never drain,
    // so the third strike over the burst bans.
    let mut a = node_with(TCP, |c| {
        c.limits.requests_per_second = 0;
        c.limits.request_burst = 2;
    })
    .await;
    let mut b = node(TCP).await;
    connect(&mut a, &mut b).await;
    let a_peer = a.peer();
    let (a_net, _, _served) = a.serve_reversed();

    for _ in 0..2 {
        within("allowed", b.net.request(a_peer, b"x".to_vec())).await.expect("within the burst");
    }
    for strike in 1..=2 {
        let result = within("refused", b.net.request(a_peer, b"x".to_vec())).await;
        assert!(result.is_err(), "strike {strike} must be refused");
    }
    let stats = a_net.stats().await;
    assert_eq!(stats.requests_rate_limited, 2);
    assert_eq!(stats.peers_banned, 0);

    let _ = within("third strike", b.net.request(a_peer, b"x".to_vec())).await;
    until("banned", || async { a_net.stats().await.peers_banned == 1 }).await;
    b.disconnected_from(a_peer).await;
}

#[tokio::test]
async fn a_connection_flood_is_capped_and_the_node_keeps_serving() {
    // A node that takes at most 3 inbound connections, dialled by 8 peers
    // at once, and by one of them again and again.
    let a = node_with(TCP, |c| {
        c.limits.max_established_inbound = 3;
        c.limits.max_established_per_peer = 1;
    })
    .await;
    let (a_net, a_address, _served) = a.serve_reversed();
    let mut flood = Vec::new();
    for _ in 0..8 {
        flood.push(node(TCP).await);
    }
    for peer in &flood {
        for _ in 0..3 {
            let _ = peer.net.dial(a_address.clone()).await;
        }
    }
    // Some got in, never more than the cap, and never twice for one peer.
    until("the first peers are connected", || async { a_net.peers().await.len() == 3 }).await;
    for _ in 0..20 {
        let peers = a_net.peers().await;
        assert!(peers.len() <= 3, "{} inbound connections", peers.len());
        assert!(peers.iter().all(|p| p.addresses.len() == 1), "{peers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Those inside are served.
    let inside: Vec<PeerId> = a_net.peers().await.iter().map(|p| p.peer).collect();
    let first = flood.iter().find(|n| inside.contains(&n.peer())).expect("a connected peer");
    let echoed = within("served", first.net.request(a_net.local_peer_id(), b"ab".to_vec())).await;
    assert_eq!(echoed.expect("answered"), b"ba");
}

#[tokio::test]
async fn disconnect_bans_the_peer_both_ways() {
    let mut a = node(TCP).await;
    let mut b = node(TCP).await;
    connect(&mut a, &mut b).await;
    let b_peer = b.peer();

    a.net.disconnect(b_peer).await;
    a.disconnected_from(b_peer).await;
    b.disconnected_from(a.peer()).await;
    assert!(a.net.peers().await.is_empty());
    assert_eq!(a.net.stats().await.peers_banned, 1);

    // We refuse to dial it or to send it requests…
    assert!(matches!(
        a.net.dial(b.address.clone()).await,
        Err(NetError::Banned(p)) if p == b_peer
    ));
    assert!(matches!(
        a.net.request(b_peer, b"x".to_vec()).await,
        Err(RequestError::Banned(p)) if p == b_peer
    ));
    // …and its redial is refused.
    b.net.dial(a.address.clone()).await.expect("dial starts");
    until("redial refused", || async { a.net.stats().await.connections_refused >= 1 }).await;
    assert!(a.net.peers().await.is_empty());
}

#[tokio::test]
async fn configured_peers_are_dialled_and_redialled() {
    let a_key = Keypair::generate_ed25519();
    let mut a = node_with(TCP, |c| c.keypair = a_key.clone()).await;
    let a_peer = a.peer();
    let a_address = a.address.clone();
    let mut b = node_with(TCP, |c| c.peers = vec![a_address.clone()]).await;
    a.connected_to(b.peer()).await;
    b.connected_to(a_peer).await;

    // a goes away, then comes back on the same address with the same key:
    // b redials it after its backoff.
    a.net.shutdown().await;
    b.disconnected_from(a_peer).await;
    let listen: Multiaddr = a_address.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    let _a = node_with(&listen.to_string(), |c| c.keypair = a_key).await;
    b.connected_to(a_peer).await;
}

fn is_relayed(address: &Multiaddr) -> bool {
    address.iter().any(|part| part == Protocol::P2pCircuit)
}

/// A node that cannot be reached directly (say, behind a NAT) reserves a
/// slot on a relay; another node that knows it only by its relayed address
/// `R/p2p-circuit/p2p/A` connects through the relay and exchanges a sync
/// request and response with it. (DCUtR may then add a direct connection,
/// which on loopback can succeed; the connection the peers first see, and
/// the request sent on it at once, are relayed.)
#[tokio::test]
async fn a_node_reserved_on_a_relay_is_reached_through_it() {
    let relay = node_with(TCP, |c| {
        c.relay_server = true;
        c.listen_is_external = true;
    })
    .await;
    let relay_address = relay.address.clone();
    let mut a = node_with(TCP, |c| c.relays = vec![relay_address.clone()]).await;
    let a_peer = a.peer();
    let circuit = a
        .next("a reserves on the relay", |e| match e {
            Event::Listening { address } if is_relayed(&address) => Some(address),
            _ => None,
        })
        .await;
    let expected = relay_address.clone().with(Protocol::P2pCircuit).with(Protocol::P2p(a_peer));
    assert_eq!(circuit, expected, "the relayed address names the relay and a");

    let mut b = node(TCP).await;
    let b_peer = b.peer();
    b.net.dial(circuit.clone()).await.expect("dial");
    let seen_by_b = b
        .next("b connects to a", |e| match e {
            Event::Connected { peer, address, .. } if peer == a_peer => Some(address),
            _ => None,
        })
        .await;
    let seen_by_a = a
        .next("a sees b", |e| match e {
            Event::Connected { peer, address, .. } if peer == b_peer => Some(address),
            _ => None,
        })
        .await;
    assert!(is_relayed(&seen_by_b), "b reached a at {seen_by_b}");
    assert!(is_relayed(&seen_by_a), "a was reached at {seen_by_a}");

    let (a_net, _, served) = a.serve_reversed();
    let answer =
        within("request", b.net.request_on(Channel::Sync, a_peer, b"relayed".to_vec())).await;
    assert_eq!(answer.expect("response"), b"deyaler");
    let infos = b.net.peers().await;
    let a_info = infos.iter().find(|p| p.peer == a_peer).expect("a listed");
    assert!(a_info.addresses.iter().any(is_relayed), "{:?}", a_info.addresses);
    assert_eq!((a_info.requests_out, a_info.bytes_in), (1, 7));

    b.net.shutdown().await;
    a_net.shutdown().await;
    relay.net.shutdown().await;
    assert_eq!(within("a's server ends", served).await.expect("join"), 1);
}

#[tokio::test]
async fn a_relay_address_without_the_relay_id_is_refused() {
    let mut config = Config::new(Keypair::generate_ed25519());
    config.relays = vec!["/ip4/127.0.0.1/tcp/1".parse().expect("address")];
    let error = start(config).await.expect_err("no relay id");
    assert!(matches!(error, NetError::NotARelay(_)), "{error}");
}

/// A reservation lost with its relay is reported expired and redone once
/// the relay is back.
#[tokio::test]
async fn a_lost_reservation_is_redone_when_the_relay_returns() {
    let relay_key = Keypair::generate_ed25519();
    let relay_config = |c: &mut Config| {
        c.keypair = relay_key.clone();
        c.relay_server = true;
        c.listen_is_external = true;
    };
    let relay = node_with(TCP, relay_config).await;
    let relay_address = relay.address.clone();
    let mut a = node_with(TCP, |c| c.relays = vec![relay_address.clone()]).await;
    let reserved = |e| match e {
        Event::Listening { address } if is_relayed(&address) => Some(address),
        _ => None,
    };
    let circuit = a.next("a reserves", reserved).await;

    relay.net.shutdown().await;
    let expired = a
        .next("a's reservation expires", |e| match e {
            Event::ListenExpired { address } => Some(address),
            _ => None,
        })
        .await;
    assert_eq!(expired, circuit);

    let listen: Multiaddr =
        relay_address.iter().filter(|p| !matches!(p, Protocol::P2p(_))).collect();
    let _relay = node_with(&listen.to_string(), relay_config).await;
    assert_eq!(a.next("a reserves again", reserved).await, circuit);
}
