//! Garbage from the network and from an app: refused, and the node keeps
//! serving sync and its API.

use basic_net::{Config, Keypair, Limits, Multiaddr, Net, PeerId, RequestError};
use basic_proto::KeyCache;
use basic_proto::sync::message::MAX_FRAME_BYTES;
use basic_proto::sync::{ErrorCode, Message};
use serde_json::json;

use super::harness::{BASIC, Data};
use super::two_devices::{device_of, join, wait_in_sync};

/// A bare libp2p client of our transport, allowed to send big frames.
async fn raw_client(target: &str) -> (Net, PeerId) {
    let address: Multiaddr = target.parse().expect("address");
    let peer = basic_net::peer_of(&address).expect("peer id");
    let mut config = Config::new(Keypair::generate_ed25519());
    config.peers = vec![address];
    config.limits = Limits { max_request_bytes: 8 << 20, ..Limits::default() };
    let (net, _events) = basic_net::start(config).await.expect("client");
    (net, peer)
}

#[test]
fn garbage_and_oversized_frames_are_refused_and_the_node_keeps_serving() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));
    let runtime = tokio::runtime::Runtime::new().expect("runtime");

    // A frame that is not CBOR: answered with `error 1` (malformed).
    let answer = runtime.block_on(async {
        let (net, peer) = raw_client(a.address()).await;
        let answer = net.request(peer, vec![0xff; 100]).await;
        net.shutdown().await;
        answer
    });
    let frame = answer.expect("an error frame");
    match Message::decode(&frame, MAX_FRAME_BYTES, &KeyCache::default()) {
        Ok(Message::Error { code, .. }) => assert_eq!(code, ErrorCode::Malformed),
        other => panic!("expected an error frame, got {other:?}"),
    }

    // A frame over the request cap: the stream is dropped unread.
    let answer = runtime.block_on(async {
        let (net, peer) = raw_client(a.address()).await;
        let answer = net.request(peer, vec![0u8; 2 << 20]).await;
        net.shutdown().await;
        answer
    });
    assert!(
        matches!(answer, Err(RequestError::Io(_) | RequestError::ConnectionClosed)),
        "{answer:?}"
    );

    // A bad API request: a 4xx.
    let (status, body) = a.post_raw("/v0/sql", Some(&a.token), b"{\"sql\": ");
    assert_eq!(status, 400, "{body}");
    let (status, _) = a.sql_as("wrong", "SELECT 1", json!([]));
    assert_eq!(status, 401);

    // Sync and the API go on.
    a.sql("INSERT INTO todo.lists (id, name) VALUES ('still', 'Still here')", json!([]));
    b.wait_rows("SELECT id FROM todo.lists", &json!([["still"]]));
    assert!(a.log().contains("broke the sync protocol"), "the violation is logged");
}

/// Issue 10 item 13: a stranger who connects to a node is told nothing —
/// no `hello` naming the database and the device's key comes its way —
/// while the node keeps syncing with its members.
#[test]
fn a_stranger_that_connects_is_sent_nothing() {
    let a_data = Data::with_todo(BASIC);
    let a = a_data.up(&[]);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let heard = runtime.block_on(async {
        let address: Multiaddr = a.address().parse().expect("address");
        let mut config = Config::new(Keypair::generate_ed25519());
        config.peers = vec![address];
        let (net, mut events) = basic_net::start(config).await.expect("client");
        let mut heard = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, events.recv()).await {
            if let basic_net::Event::Request { frame, .. } = event {
                heard.push(frame);
            }
        }
        net.shutdown().await;
        heard
    });
    assert!(heard.is_empty(), "the node greeted a stranger: {} frames", heard.len());
    // Its members still sync with it.
    let b_data = join(&a);
    let b = b_data.up(&[a.address()]);
    wait_in_sync(&a, &device_of(&b));
}
