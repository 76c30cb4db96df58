//! A small lab of Linux network namespaces for fault tests: one namespace
//! per host, all joined by veth pairs to a bridge in a hub namespace, and
//! this test process reaching every host through one more veth (the
//! controller address). Faults are applied per host: packet loss and
//! partitions with nftables, bandwidth with `tc … tbf`. The controller's
//! own traffic (the test's HTTP calls) is never dropped.
//!
//! Making namespaces needs root (CAP_NET_ADMIN), `ip` (iproute2), `nft`
//! (nftables) and `tc`. Without them [`Lab::new`] says why and returns
//! `None`, and the test returns; with `BASIC_REQUIRE_NETNS=1` (set by
//! `.ci/run`) it fails instead, so CI never counts a skipped fault test as
//! passed.

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// Labs made by this process so far (names and subnets stay unique when
/// tests run in parallel).
static LABS: AtomicU32 = AtomicU32::new(0);

/// One host of a lab: its namespace and its address.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub(crate) namespace: String,
    pub(crate) ip: Ipv4Addr,
}

impl Host {
    /// `basic up` arguments for this host: the API on its address (the
    /// test reaches it through the controller), sync on TCP there.
    pub(crate) fn listen(&self) -> String {
        format!("/ip4/{}/tcp/0", self.ip)
    }

    /// The address the API listens on (any free port).
    pub(crate) fn api(&self) -> String {
        format!("{}:0", self.ip)
    }
}

/// Namespaces, veths and a bridge; all removed when dropped.
#[derive(Debug)]
pub(crate) struct Lab {
    hub: String,
    /// The controller's end of its veth, in this process's namespace.
    controller_link: String,
    controller: Ipv4Addr,
    hosts: Vec<Host>,
}

/// Runs a command and says how it failed, if it did.
fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<(), String> {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::piped()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = command.spawn().map_err(|e| format!("{program}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    if let Some(input) = input {
        stdin.write_all(input.as_bytes()).map_err(|e| format!("{program}: {e}"))?;
    }
    drop(stdin);
    let output = child.wait_with_output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

impl Lab {
    /// A lab of `hosts` namespaces, or `None` (with the reason printed)
    /// when this machine cannot make one and `BASIC_REQUIRE_NETNS` is unset.
    pub(crate) fn new(hosts: usize) -> Option<Self> {
        assert!((1..250).contains(&hosts));
        let serial = LABS.fetch_add(1, Ordering::Relaxed);
        // Unique among concurrent test processes too (pid), short enough
        // for interface names (15 bytes at most).
        let id = (std::process::id() % 4096) * 16 + serial % 16;
        let subnet = [10, 200 + (id / 256 % 50) as u8, (id % 256) as u8];
        let lab = Self {
            hub: format!("basic-{id}-hub"),
            controller_link: format!("bsc{id}c"),
            controller: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], 254),
            hosts: (0..hosts)
                .map(|i| Host {
                    namespace: format!("basic-{id}-{i}"),
                    ip: Ipv4Addr::new(subnet[0], subnet[1], subnet[2], i as u8 + 1),
                })
                .collect(),
        };
        match lab.build(id) {
            Ok(()) => Some(lab),
            Err(error) => {
                drop(lab);
                let required = std::env::var_os("BASIC_REQUIRE_NETNS").is_some_and(|v| v == "1");
                assert!(!required, "BASIC_REQUIRE_NETNS=1 but no network namespaces: {error}");
                eprintln!(
                    "SKIPPED: this test needs network namespaces (root, iproute2, nftables): {error}"
                );
                None
            }
        }
    }

    fn build(&self, id: u32) -> Result<(), String> {
        for tool in ["ip", "nft", "tc"] {
            run("sh", &["-c", &format!("command -v {tool}")], None)
                .map_err(|_| format!("{tool} is not installed"))?;
        }
        run("ip", &["netns", "add", &self.hub], None)?;
        run("ip", &["-n", &self.hub, "link", "add", "br0", "type", "bridge"], None)?;
        run("ip", &["-n", &self.hub, "link", "set", "br0", "up"], None)?;
        let prefix = 24;
        // The controller: a veth from here into the hub's bridge.
        let hub_end = format!("bsc{id}h");
        run(
            "ip",
            &["link", "add", &self.controller_link, "type", "veth", "peer", "name", &hub_end],
            None,
        )?;
        self.attach(&hub_end, "c")?;
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/{prefix}", self.controller),
                "dev",
                &self.controller_link,
            ],
            None,
        )?;
        run("ip", &["link", "set", &self.controller_link, "up"], None)?;
        for (i, host) in self.hosts.iter().enumerate() {
            let ns = host.namespace.as_str();
            run("ip", &["netns", "add", ns], None)?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"], None)?;
            let (inner, outer) = (format!("bsc{id}i{i}"), format!("bsc{id}o{i}"));
            run("ip", &["link", "add", &inner, "type", "veth", "peer", "name", &outer], None)?;
            run("ip", &["link", "set", &inner, "netns", ns], None)?;
            run("ip", &["-n", ns, "link", "set", &inner, "name", "eth0"], None)?;
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{}/{prefix}", host.ip), "dev", "eth0"],
                None,
            )?;
            run("ip", &["-n", ns, "link", "set", "eth0", "up"], None)?;
            self.attach(&outer, &format!("h{i}"))?;
        }
        Ok(())
    }

    /// Moves `link` into the hub, names it `name` and joins it to the bridge.
    fn attach(&self, link: &str, name: &str) -> Result<(), String> {
        run("ip", &["link", "set", link, "netns", &self.hub], None)?;
        run("ip", &["-n", &self.hub, "link", "set", link, "name", name], None)?;
        run("ip", &["-n", &self.hub, "link", "set", name, "master", "br0"], None)?;
        run("ip", &["-n", &self.hub, "link", "set", name, "up"], None)
    }

    /// The lab's hosts.
    pub(crate) fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Replaces the nftables table `table` of host `i` with `body` (its
    /// chains); an empty body removes the table.
    fn nft(&self, i: usize, table: &str, body: &str) {
        let ns = &self.hosts[i].namespace;
        // Deleting a table that is not there fails: that is fine.
        let _ = run("ip", &["netns", "exec", ns, "nft", "delete", "table", "inet", table], None);
        if !body.is_empty() {
            let ruleset = format!("table inet {table} {{\n{body}\n}}\n");
            run("ip", &["netns", "exec", ns, "nft", "-f", "-"], Some(&ruleset))
                .unwrap_or_else(|e| panic!("{e}\n{ruleset}"));
        }
    }

    /// Drops `percent` of host `i`'s packets in each direction, except the
    /// controller's.
    pub(crate) fn loss(&self, i: usize, percent: u8) {
        let keep = self.controller;
        let body = if percent == 0 {
            String::new()
        } else {
            format!(
                "chain input {{ type filter hook input priority 0; ip saddr {keep} accept; numgen random mod 100 < {percent} counter drop; }}\n\
                 chain output {{ type filter hook output priority 0; ip daddr {keep} accept; numgen random mod 100 < {percent} counter drop; }}"
            )
        };
        self.nft(i, "loss", &body);
    }

    /// Packets host `i`'s loss rules dropped so far.
    pub(crate) fn dropped(&self, i: usize) -> u64 {
        let ns = &self.hosts[i].namespace;
        let output = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "list", "table", "inet", "loss"])
            .output()
            .expect("nft list");
        let text = String::from_utf8_lossy(&output.stdout);
        let words: Vec<&str> = text.split_whitespace().collect();
        words
            .windows(2)
            .filter(|pair| pair[0] == "packets")
            .filter_map(|pair| pair[1].parse::<u64>().ok())
            .sum()
    }

    /// Limits host `i`'s outgoing bandwidth to `kbit` kilobits a second.
    pub(crate) fn rate(&self, i: usize, kbit: u32) {
        let ns = &self.hosts[i].namespace;
        let rate = format!("{kbit}kbit");
        run(
            "ip",
            &[
                "netns", "exec", ns, "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf",
                "rate", &rate, "burst", "16kb", "latency", "400ms",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    }

    /// Cuts the lab into `groups` of hosts: no packet crosses between two
    /// groups (the controller still reaches every host).
    pub(crate) fn partition(&self, groups: &[&[usize]]) {
        for group in groups {
            let others: Vec<String> = groups
                .iter()
                .filter(|g| *g != group)
                .flat_map(|g| g.iter().map(|&i| self.hosts[i].ip.to_string()))
                .collect();
            if others.is_empty() {
                continue;
            }
            let others = others.join(", ");
            let body = format!(
                "chain input {{ type filter hook input priority 0; ip saddr {{ {others} }} drop; }}\n\
                 chain output {{ type filter hook output priority 0; ip daddr {{ {others} }} drop; }}"
            );
            for &i in *group {
                self.nft(i, "partition", &body);
            }
        }
    }

    /// Ends a partition.
    pub(crate) fn heal(&self) {
        for i in 0..self.hosts.len() {
            self.nft(i, "partition", "");
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Removing a namespace removes the veth ends in it, and so the pairs.
        for host in &self.hosts {
            let _ = run("ip", &["netns", "del", &host.namespace], None);
        }
        let _ = run("ip", &["link", "del", &self.controller_link], None);
        let _ = run("ip", &["netns", "del", &self.hub], None);
    }
}
