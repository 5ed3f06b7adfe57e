//! RedisCache against a real three-node Redis Cluster on 127.0.0.1 (created with `redis-cli --cluster
//! create`): discovery from one seed, per-slot MGETs on every node, stats and clear across nodes, and a
//! node killed and restarted.

mod common;

use common::{Counting, RedisServer, eventually, load_tiny, refs, require_redis, sentences};
use embedkit_cache::{Cache, CachedEmbedder, RedisCache, RedisCacheOptions, key_slot};
use embedkit_core::{Embedder, EncodeOptions};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

struct Cluster {
    nodes: Vec<RedisServer>,
}

impl Cluster {
    fn start() -> Self {
        require_redis();
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "5000",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("running redis-cli --cluster create");
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = Self { nodes };
        assert!(
            eventually(Duration::from_secs(30), || cluster.ok()),
            "the cluster did not reach cluster_state:ok"
        );
        cluster
    }

    /// Every node reports cluster_state:ok.
    fn ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            let Ok(client) = redis::Client::open(n.url()) else {
                return false;
            };
            let Ok(mut c) = client.get_connection_with_timeout(Duration::from_millis(300)) else {
                return false;
            };
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query::<String>(&mut c)
                .is_ok_and(|i| i.contains("cluster_state:ok"))
        })
    }

    fn dbsize(&self, i: usize) -> u64 {
        redis::cmd("DBSIZE")
            .query(&mut self.nodes[i].client())
            .unwrap()
    }
}

fn options() -> RedisCacheOptions {
    RedisCacheOptions {
        connect_timeout: Duration::from_millis(300),
        io_timeout: Duration::from_millis(500),
        retry_after: Duration::from_millis(100),
        ..Default::default()
    }
}

#[test]
fn cluster_is_discovered_and_batches_go_per_slot_to_every_node() {
    let mut cluster = Cluster::start();
    // One seed is enough; the slot table comes from CLUSTER SLOTS.
    let cache = Arc::new(RedisCache::open(&cluster.nodes[1].url(), options()).unwrap());
    let cached = CachedEmbedder::new(Counting::new(load_tiny("bert-mean")), cache.clone())
        .with_warn_hook(Arc::new(|_| {}));
    let texts = sentences(120, "cluster");
    let plain = load_tiny("bert-mean");
    let o = EncodeOptions::default();
    let want = plain.embed(&refs(&texts), &o).unwrap();

    let got = cached.embed(&refs(&texts), &o).unwrap();
    common::assert_close("cold", &got, &want, 1e-5);
    assert!(cache.is_cluster());
    assert_eq!(cache.cluster_nodes().len(), 3);
    assert_eq!(cached.counters().errors, 0);
    // 120 random keys land on all three primaries.
    let sizes: Vec<u64> = (0..3).map(|i| cluster.dbsize(i)).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 120, "{sizes:?}");
    assert!(sizes.iter().all(|&s| s > 0), "{sizes:?}");

    // Every key sits on the node that owns its slot by our CRC16.
    let mut c0 = cluster.nodes[0].client();
    let keys: Vec<String> = redis::cmd("KEYS").arg("embedkit:*").query(&mut c0).unwrap();
    for k in &keys {
        let slot: u16 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(k)
            .query(&mut c0)
            .unwrap();
        assert_eq!(key_slot(k.as_bytes()), slot);
    }

    // All hits now, from three nodes.
    let again = cached.embed(&refs(&texts), &o).unwrap();
    assert_eq!(again, got);
    assert_eq!(cached.inner().texts(), 120);
    let s = cache.stats().unwrap();
    assert_eq!((s.entries, s.hits, s.misses), (120, 120, 120), "{s:?}");

    // A node dies: results stay correct (its keys are computed), and after it is back caching resumes.
    cluster.nodes[2].kill();
    let during = cached.embed(&refs(&texts), &o).unwrap();
    common::assert_close("node down", &during, &want, 1e-5);
    assert!(cached.counters().errors > 0);
    cluster.nodes[2].restart(); // same port, same nodes.conf: it rejoins with its slots
    assert!(
        eventually(Duration::from_secs(60), || cluster.ok()),
        "the restarted node did not rejoin"
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            let before = cached.inner().texts();
            let got = cached.embed(&refs(&texts), &o).unwrap();
            common::assert_close("after rejoin", &got, &want, 1e-5);
            cached.inner().texts() == before
        }),
        "caching did not resume on the cluster"
    );

    assert_eq!(cache.clear().unwrap(), 120);
    assert_eq!((0..3).map(|i| cluster.dbsize(i)).sum::<u64>(), 0);
}
