//! Basic's libp2p transport.
