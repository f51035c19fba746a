//! `confab admin stats`: the answering node's counters, and on a cluster every node's beside
//! each other with the cluster's totals.

use super::table::Table;
use crate::pb;

/// The counters of `s`, as a table or (with `json`) one JSON object with `per_node` on a
/// cluster.
pub(super) fn print(s: &pb::GetStatsResponse, json: bool) {
    let rows = [
        ("uptime_seconds", s.uptime_seconds),
        ("users", s.users),
        ("sessions", s.sessions),
        ("logins", s.logins),
        ("failed_logins", s.failed_logins),
        ("lockouts", s.lockouts),
        ("messages_relayed", s.messages_relayed),
        ("messages_delivered_live", s.messages_delivered_live),
        ("broadcasts", s.broadcasts),
        ("broadcast_deliveries", s.broadcast_deliveries),
        ("address_requests", s.address_requests),
        ("address_grants", s.address_grants),
        ("streams_too_slow", s.streams_too_slow),
        ("storage_commits", s.storage_commits),
        ("cluster_sessions", s.cluster_sessions),
        ("nodes", s.nodes),
    ];
    if json {
        let mut map: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).into()))
            .collect();
        if !s.node.is_empty() {
            map.insert("node".into(), s.node.clone().into());
            let nodes = s.per_node.iter().map(|n| {
                let mut m: serde_json::Map<String, serde_json::Value> = node_row(n)
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.into()))
                    .collect();
                m.insert("node".into(), n.node.clone().into());
                serde_json::Value::Object(m)
            });
            map.insert("per_node".into(), nodes.collect::<Vec<_>>().into());
        }
        println!("{}", serde_json::Value::Object(map));
        return;
    }
    let mut table = Table::new(&["COUNTER", "VALUE"]);
    for (k, v) in rows {
        table.row(vec![k.to_owned(), v.to_string()]);
    }
    print!("{}", table.render());
    if !s.per_node.is_empty() {
        println!();
        print!("{}", per_node(&s.per_node).render());
    }
}

/// A node's counters by name, in the order the per-node table shows them.
fn node_row(n: &pb::NodeStats) -> [(&'static str, u64); 13] {
    [
        ("uptime_seconds", n.uptime_seconds),
        ("sessions", n.sessions),
        ("logins", n.logins),
        ("failed_logins", n.failed_logins),
        ("lockouts", n.lockouts),
        ("messages_relayed", n.messages_relayed),
        ("messages_delivered_live", n.messages_delivered_live),
        ("broadcasts", n.broadcasts),
        ("broadcast_deliveries", n.broadcast_deliveries),
        ("address_requests", n.address_requests),
        ("address_grants", n.address_grants),
        ("streams_too_slow", n.streams_too_slow),
        ("storage_commits", n.storage_commits),
    ]
}

/// One column per node and one for the cluster's totals (uptime: the longest).
fn per_node(nodes: &[pb::NodeStats]) -> Table {
    let mut table = Table::new(&["COUNTER", "NODE", "VALUE"]);
    let names: Vec<&str> = nodes.iter().map(|n| n.node.as_str()).collect();
    let rows: Vec<_> = nodes.iter().map(node_row).collect();
    for (i, (counter, _)) in rows[0].iter().enumerate() {
        let mut total = 0u64;
        for (name, row) in names.iter().zip(&rows) {
            let v = row[i].1;
            total = if *counter == "uptime_seconds" {
                total.max(v)
            } else {
                total + v
            };
            table.row(vec![
                (*counter).to_owned(),
                (*name).to_owned(),
                v.to_string(),
            ]);
        }
        table.row(vec![
            (*counter).to_owned(),
            "(cluster)".into(),
            total.to_string(),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cluster_row_adds_up_the_nodes_and_takes_the_longest_uptime() {
        let node = |name: &str, uptime, logins| pb::NodeStats {
            node: name.into(),
            uptime_seconds: uptime,
            logins,
            ..Default::default()
        };
        let out = per_node(&[node("n0", 10, 3), node("n1", 30, 4)]).render();
        let cluster: Vec<&str> = out.lines().filter(|l| l.contains("(cluster)")).collect();
        assert!(cluster[0].starts_with("uptime_seconds") && cluster[0].ends_with(" 30"));
        assert!(cluster[1].starts_with("sessions") && cluster[1].ends_with(" 0"));
        assert!(cluster[2].starts_with("logins") && cluster[2].ends_with(" 7"));
        assert!(out.lines().next().unwrap().starts_with("COUNTER"));
    }
}
