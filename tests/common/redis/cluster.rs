//! [`RedisCluster`]: three masters sharing the slots, one of which a test can move.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{
    Dir, Node, READY_TIMEOUT, START_ATTEMPTS, find_binary, free_port, info_command, query,
    server_args, serves, spawn, wait_until,
};

/// Three masters sharing the 16384 slots (no replicas), everything killed when dropped.
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: Dir,
}

impl RedisCluster {
    /// Starts three nodes, joins them with `redis-cli --cluster create` and waits until every
    /// node says `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        let server = find_binary("redis-server", "redis-server");
        let cli = find_binary("redis-cli", "redis-tools");
        for attempt in 1..=START_ATTEMPTS {
            let mut cluster = RedisCluster {
                nodes: Vec::new(),
                dir: Dir::new("redis-cluster"),
            };
            match cluster.spawn_and_wait(&server, &cli) {
                Ok(()) => return cluster,
                Err(why) => assert!(
                    attempt < START_ATTEMPTS,
                    "redis cluster did not start: {why}; logs:\n{}",
                    cluster.dir.logs()
                ),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn_and_wait(&mut self, server: &Path, cli: &Path) -> Result<(), String> {
        let dir = self.dir.path.clone();
        for _ in 0..3 {
            // The bus port is chosen too: the default (port + 10000) may be taken or > 65535.
            let (port, bus) = (free_port(), free_port());
            let log = dir.join(format!("node-{port}.log"));
            let mut args = server_args(port, &dir, &log);
            args.extend(
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    "--cluster-port",
                    &bus.to_string(),
                    "--cluster-node-timeout",
                    "5000",
                    "--dbfilename",
                    &format!("dump-{port}.rdb"),
                ]
                .map(String::from),
            );
            self.nodes.push(Node {
                port,
                guard: Some(spawn(server, &args)),
            });
            if !wait_until(READY_TIMEOUT, || serves(port, &log)) {
                return Err(format!("node {port} did not answer PING"));
            }
        }
        let output = Command::new(cli)
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli runs");
        if !output.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed:\n{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        for node in &self.nodes {
            let ok = || {
                info_command(node.port, &["CLUSTER", "INFO"]).is_some_and(|info| {
                    info.contains("cluster_state:ok")
                        && info.contains("cluster_slots_ok:16384")
                        && info.contains("cluster_known_nodes:3")
                })
            };
            if !wait_until(READY_TIMEOUT, ok) {
                return Err(format!("node {} never said cluster_state:ok", node.port));
            }
        }
        Ok(())
    }

    /// `redis://127.0.0.1:<port>` of every node.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}", n.port))
            .collect()
    }

    /// The port of every node.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Moves the slot of `key` (which must exist) to another node, the way resharding does
    /// (IMPORTING / MIGRATING, MIGRATE, SETSLOT NODE everywhere). Returns the old and the new
    /// owner's ports.
    pub fn move_slot_of(&self, key: &str) -> (u16, u16) {
        let ports = self.ports();
        let from = *ports
            .iter()
            .find(|&&p| query::<i64>(p, &["EXISTS", key]) == Some(1))
            .expect("a node holds the key");
        let to = *ports.iter().find(|&&p| p != from).expect("three nodes");
        let slot: i64 = query(from, &["CLUSTER", "KEYSLOT", key]).expect("CLUSTER KEYSLOT");
        let slot = slot.to_string();
        let id = |port| query::<String>(port, &["CLUSTER", "MYID"]).expect("CLUSTER MYID");
        let (from_id, to_id) = (id(from), id(to));
        let ok = |port, args: &[&str]| {
            let reply: Option<String> = query(port, args);
            assert_eq!(reply.as_deref(), Some("OK"), "{args:?} on {port}");
        };
        ok(to, &["CLUSTER", "SETSLOT", &slot, "IMPORTING", &from_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot, "MIGRATING", &to_id]);
        loop {
            let keys: Vec<String> = query(from, &["CLUSTER", "GETKEYSINSLOT", &slot, "100"])
                .expect("CLUSTER GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let to_port = to.to_string();
            let mut migrate = vec!["MIGRATE", "127.0.0.1", &to_port, "", "0", "5000", "KEYS"];
            migrate.extend(keys.iter().map(String::as_str));
            ok(from, &migrate);
        }
        for port in [to, from]
            .into_iter()
            .chain(ports.iter().copied().filter(|&p| p != from && p != to))
        {
            ok(port, &["CLUSTER", "SETSLOT", &slot, "NODE", &to_id]);
        }
        (from, to)
    }
}
