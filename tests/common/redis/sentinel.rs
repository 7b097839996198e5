//! [`RedisSentinel`]: a master, a replica and two sentinels, which a test can fail over,
//! announced or not.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::{
    Dir, Node, READY_TIMEOUT, START_ATTEMPTS, dir_name, find_binary, find_optional, free_port,
    info, query, role, server_args, serves, spawn, wait_until,
};

/// The name the sentinels of [`RedisSentinel`] monitor the master under.
pub const MASTER_NAME: &str = "mymaster";

/// A master, a replica of it, and two sentinels monitoring it as [`MASTER_NAME`] (quorum 1,
/// so that either can fail it over; never on its own: `down-after-milliseconds` is a minute).
/// Everything is killed when dropped.
pub struct RedisSentinel {
    // Fields drop in order: the processes, then the dir.
    servers: Vec<Node>,
    sentinels: Vec<Node>,
    dir: Dir,
}

impl RedisSentinel {
    /// Starts the servers, waits for the replica to be in sync, starts the sentinels and
    /// waits until each has found the replica (a failover needs one).
    pub fn start() -> RedisSentinel {
        let server = find_binary("redis-server", "redis-server");
        // Debian's redis-sentinel package; `redis-server --sentinel` is the same program.
        let sentinel = find_optional("redis-sentinel");
        for attempt in 1..=START_ATTEMPTS {
            let dir = Dir::new("redis-sentinel");
            let mut setup = RedisSentinel {
                servers: Vec::new(),
                sentinels: Vec::new(),
                dir,
            };
            match setup.spawn_and_wait(&server, sentinel.as_deref()) {
                Ok(()) => return setup,
                Err(why) => assert!(
                    attempt < START_ATTEMPTS,
                    "redis sentinel set-up did not start: {why}; logs:\n{}",
                    setup.dir.logs()
                ),
            }
        }
        unreachable!("the loop returns or panics")
    }

    fn spawn_and_wait(&mut self, server: &Path, sentinel: Option<&Path>) -> Result<(), String> {
        let dir = self.dir.path.clone();
        let (master, replica) = (free_port(), free_port());
        for (port, replica_of) in [(master, None), (replica, Some(master))] {
            let log = dir.join(format!("redis-{port}.log"));
            let mut args = server_args(port, &dir, &log);
            // A replica syncs at once, not after the default 5 s wait for more replicas.
            args.extend(
                [
                    "--dbfilename",
                    &format!("dump-{port}.rdb"),
                    "--repl-diskless-sync-delay",
                    "0",
                ]
                .map(String::from),
            );
            if let Some(master) = replica_of {
                args.extend(["--replicaof".into(), "127.0.0.1".into(), master.to_string()]);
            }
            self.servers.push(Node {
                port,
                guard: Some(spawn(server, &args)),
            });
            if !wait_until(READY_TIMEOUT, || serves(port, &log)) {
                return Err(format!("redis-server on {port} did not answer PING"));
            }
        }
        let synced = || {
            info(replica, "replication").is_some_and(|info| info.contains("master_link_status:up"))
        };
        if !wait_until(READY_TIMEOUT, synced) {
            return Err("the replica did not sync".into());
        }
        for _ in 0..2 {
            let port = free_port();
            let conf = dir.join(format!("sentinel-{port}.conf"));
            fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\nlogfile {log}\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {master} 1\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 60000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n",
                    dir = dir.display(),
                    log = dir.join(format!("sentinel-{port}.log")).display(),
                ),
            )
            .expect("write sentinel.conf");
            let guard = match sentinel {
                Some(binary) => spawn(binary, &[conf.display().to_string()]),
                None => spawn(server, &[conf.display().to_string(), "--sentinel".into()]),
            };
            self.sentinels.push(Node {
                port,
                guard: Some(guard),
            });
        }
        for node in &self.sentinels {
            let port = node.port;
            let conf = format!("sentinel-{port}.conf");
            let ours = || {
                info(port, "server").is_some_and(|info| {
                    info.lines().any(|l| {
                        l.starts_with("config_file:")
                            && l.contains(dir_name(&dir))
                            && l.ends_with(&conf)
                    })
                })
            };
            if !wait_until(READY_TIMEOUT, ours) {
                return Err(format!("sentinel {port} did not answer"));
            }
            let found_replica = || {
                query::<Vec<Vec<String>>>(port, &["SENTINEL", "REPLICAS", MASTER_NAME]).is_some_and(
                    |replicas| {
                        replicas
                            .iter()
                            .any(|fields| field(fields, "flags") == Some("slave"))
                    },
                )
            };
            if !wait_until(READY_TIMEOUT, found_replica) {
                return Err(format!("sentinel {port} did not find the replica"));
            }
        }
        Ok(())
    }

    /// `127.0.0.1` and the port of each sentinel.
    pub fn sentinels(&self) -> Vec<(String, u16)> {
        self.sentinels
            .iter()
            .map(|s| ("127.0.0.1".to_owned(), s.port))
            .collect()
    }

    /// The port of the master the first sentinel names.
    pub fn master_port(&self) -> u16 {
        master_named_by(self.sentinels[0].port).expect("the sentinel names a master")
    }

    /// The port of the server that is not the master.
    pub fn replica_port(&self) -> u16 {
        let master = self.master_port();
        self.servers
            .iter()
            .map(|s| s.port)
            .find(|&p| p != master)
            .expect("two servers")
    }

    /// Waits until the replica has everything the master had when this was called.
    pub fn wait_replicated(&self) {
        let master = self.master_port();
        let client =
            ::redis::Client::open(format!("redis://127.0.0.1:{master}")).expect("a valid url");
        let mut con = client
            .get_connection_with_timeout(Duration::from_millis(500))
            .expect("connect to the master");
        // WAIT counts the replicas that have this connection's last write: one write first.
        let acked: i64 = ::redis::pipe()
            .cmd("SET")
            .arg("harness:sync")
            .arg("1")
            .ignore()
            .cmd("WAIT")
            .arg(1)
            .arg(5000)
            .cmd("DEL")
            .arg("harness:sync")
            .ignore()
            .query::<(i64,)>(&mut con)
            .expect("WAIT on the master")
            .0;
        assert_eq!(acked, 1, "the replica did not acknowledge");
    }

    /// `SENTINEL FAILOVER`, then waits until every sentinel names the promoted replica and it
    /// says it is master. Returns the old and the new master's ports. The old master goes on
    /// as a master until the sentinels make it a replica, about ten seconds later.
    pub fn failover(&self) -> (u16, u16) {
        let (old, new) = self.failover_via(0);
        let agreed = || {
            self.sentinels
                .iter()
                .all(|s| master_named_by(s.port) == Some(new))
        };
        assert!(
            wait_until(Duration::from_secs(15), agreed),
            "the sentinels did not agree on the new master; logs:\n{}",
            self.dir.logs()
        );
        (old, new)
    }

    /// `SENTINEL FAILOVER` on sentinel `at` only, waiting only for it (the other may be
    /// frozen). Returns the old and the new master's ports.
    pub fn failover_via(&self, at: usize) -> (u16, u16) {
        let sentinel = self.sentinels[at].port;
        let old = master_named_by(sentinel).expect("the sentinel names a master");
        let new = self
            .servers
            .iter()
            .map(|s| s.port)
            .find(|&p| p != old)
            .expect("two servers");
        let _: String =
            query(sentinel, &["SENTINEL", "FAILOVER", MASTER_NAME]).expect("SENTINEL FAILOVER");
        let switched =
            || master_named_by(sentinel) == Some(new) && role(new).as_deref() == Some("master");
        assert!(
            wait_until(Duration::from_secs(15), switched),
            "the failover did not complete; logs:\n{}",
            self.dir.logs()
        );
        (old, new)
    }

    /// Stops sentinel `at` with SIGSTOP: its connections stay open and say nothing, as across
    /// a network partition. It stays so until dropped.
    pub fn freeze_sentinel(&self, at: usize) {
        let pid = info(self.sentinels[at].port, "server")
            .and_then(|info| {
                info.lines()
                    .find_map(|l| l.strip_prefix("process_id:"))
                    .map(|pid| pid.trim().to_owned())
            })
            .expect("the sentinel's process_id");
        let status = Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -STOP {pid}");
    }

    /// Does to the old master what the sentinels do some seconds after a failover: makes it
    /// a replica of the new one and disconnects its clients.
    pub fn demote(&self, old: u16, new: u16) {
        let reply: Option<String> = query(old, &["REPLICAOF", "127.0.0.1", &new.to_string()]);
        assert!(
            reply.is_some_and(|r| r.starts_with("OK")),
            "REPLICAOF on {old}"
        );
        let _: i64 = query(old, &["CLIENT", "KILL", "TYPE", "normal"]).expect("CLIENT KILL");
    }
}

fn master_named_by(sentinel: u16) -> Option<u16> {
    let (_, port): (String, u16) = query(
        sentinel,
        &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
    )?;
    Some(port)
}

/// A value in a sentinel's flat `[name, value, name, value, …]` list.
fn field<'a>(fields: &'a [String], name: &str) -> Option<&'a str> {
    fields
        .chunks(2)
        .find(|kv| kv[0] == name)
        .and_then(|kv| kv.get(1))
        .map(String::as_str)
}
