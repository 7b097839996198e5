//! What only Redis Cluster has to show: keys spread over every node, and a slot moved under
//! the store. The suite itself runs as `store::cluster::*`.

use threepid_sidecar::session::{SessionStore, SubmitOutcome};

use super::{NOW, cluster_store, request, send, session_key, shared_cluster, sid_of, submit};
use crate::common::redis::query;

#[tokio::test(flavor = "multi_thread")]
async fn cluster_keys_spread_over_every_node() {
    let cluster = shared_cluster();
    let prefix = "t:topologies:spread:";
    let store = cluster_store(cluster, prefix);
    let mut sids = Vec::new();
    for i in 0..40 {
        let req = request(&format!("u{i}@example.org"), 1, "t");
        sids.push(sid_of(&send(&*store, req).await));
    }
    for port in cluster.ports() {
        let keys: Vec<String> =
            query(port, &["KEYS", &format!("{prefix}session:*")]).expect("KEYS");
        assert!(!keys.is_empty(), "node {port} holds no session");
    }
    for sid in &sids {
        assert!(matches!(
            submit(&*store, sid, "t").await,
            SubmitOutcome::Validated(_)
        ));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_a_slot_moved_under_the_store_is_followed() {
    let cluster = shared_cluster();
    let prefix = "t:topologies:moved:";
    let store = cluster_store(cluster, prefix);
    let sid = sid_of(&send(&*store, request("moved@example.org", 1, "t1")).await);
    let key = session_key(prefix, &sid);
    let moving = key.clone();
    let (from, to) = tokio::task::spawn_blocking(move || cluster.move_slot_of(&moving))
        .await
        .unwrap();
    assert_eq!(query::<i64>(to, &["EXISTS", &key]), Some(1), "moved");
    // The store's slot map still names `from`: reads and scripts follow MOVED.
    assert!(
        store.get(&sid, NOW).await.unwrap().is_some(),
        "{from} → {to}"
    );
    assert!(matches!(
        submit(&*store, &sid, "t1").await,
        SubmitOutcome::Validated(_)
    ));
}
