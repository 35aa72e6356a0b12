//! The routing tree, as Alertmanager's `dispatch/route.go`: an alert descends into the
//! first matching child (and further siblings while a matching child has `continue`);
//! a node none of whose children match is itself the match. Group labels come from the
//! matched node's `group_by` (`...` = all labels). Group keys are Alertmanager's:
//! `{}/{child matchers}:{group labels}`.

use super::model::{labels_string, Labels};
use edgewatch_config::alerting::{Matchers, RouteConfig};
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RouteNode {
    pub id: usize,
    /// Alertmanager's route key: `{}` for the root, `parent/{matchers}` below.
    pub key: String,
    pub receiver: String,
    pub group_by_all: bool,
    pub group_by: Vec<String>,
    pub group_wait: Duration,
    pub group_interval: Duration,
    pub repeat_interval: Duration,
    pub matchers: Matchers,
    pub continue_matching: bool,
    pub children: Vec<usize>,
}

/// A compiled routing tree; node 0 is the root.
#[derive(Debug, Clone)]
pub struct RouteTree {
    pub nodes: Vec<RouteNode>,
}

impl RouteTree {
    pub fn new(root: &RouteConfig) -> Self {
        let mut t = RouteTree { nodes: Vec::new() };
        t.add(root, None);
        t
    }

    fn add(&mut self, r: &RouteConfig, parent_key: Option<&str>) -> usize {
        let id = self.nodes.len();
        let key = match parent_key {
            None => r.matchers.to_string(),
            Some(p) => format!("{p}/{}", r.matchers),
        };
        let group_by = r.group_by.clone().unwrap_or_default();
        self.nodes.push(RouteNode {
            id,
            key: key.clone(),
            receiver: r.receiver_name().to_string(),
            group_by_all: group_by.iter().any(|g| g == "..."),
            group_by,
            group_wait: r
                .group_wait
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(30)),
            group_interval: r
                .group_interval
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(300)),
            repeat_interval: r
                .repeat_interval
                .map(|d| d.get())
                .unwrap_or(Duration::from_secs(4 * 3600)),
            matchers: r.matchers.clone(),
            continue_matching: r.continue_matching,
            children: Vec::new(),
        });
        for c in &r.routes {
            let cid = self.add(c, Some(&key));
            self.nodes[id].children.push(cid);
        }
        id
    }

    /// The nodes an alert with these labels is routed to, in tree order.
    pub fn matches(&self, labels: &Labels) -> Vec<&RouteNode> {
        let mut out = Vec::new();
        self.match_node(0, labels, &mut out);
        out
    }

    fn match_node<'a>(&'a self, id: usize, labels: &Labels, out: &mut Vec<&'a RouteNode>) -> bool {
        let node = &self.nodes[id];
        if !node.matchers.matches(labels) {
            return false;
        }
        let before = out.len();
        for &c in &node.children {
            if self.match_node(c, labels, out) && !self.nodes[c].continue_matching {
                break;
            }
        }
        if out.len() == before {
            out.push(node);
        }
        true
    }
}

impl RouteNode {
    /// The labels an alert is grouped by under this route.
    pub fn group_labels(&self, labels: &Labels) -> Labels {
        if self.group_by_all {
            return labels.clone();
        }
        self.group_by
            .iter()
            .filter_map(|g| labels.get(g).map(|v| (g.clone(), v.clone())))
            .collect()
    }

    /// Alertmanager's group key: `route key:group labels`.
    pub fn group_key(&self, group_labels: &Labels) -> String {
        format!("{}:{}", self.key, labels_string(group_labels))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgewatch_config::alerting::AlertingConfig;

    fn tree(yaml: &str) -> RouteTree {
        RouteTree::new(&AlertingConfig::from_yaml(yaml).unwrap().route)
    }

    fn labels(s: &str) -> Labels {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap();
                (k.to_string(), v.to_string())
            })
            .collect()
    }

    const TREE: &str = r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['team="db"']
      receiver: db
      routes:
        - matchers: ['severity="critical"']
          receiver: db-pager
    - matchers: ['severity=~"critical|page"']
      receiver: pager
      continue: true
      group_by: [cluster]
    - matchers: ['severity!="info"', 'cluster=~"edge-.*"']
      receiver: edge
      group_by: ['...']
    - matchers: ['severity="critical"']
      receiver: never-reached-after-edge
receivers:
  - name: default
  - name: db
  - name: db-pager
  - name: pager
  - name: edge
  - name: never-reached-after-edge
"#;

    #[test]
    fn routing_table() {
        let t = tree(TREE);
        let cases: &[(&str, &[&str])] = &[
            ("alertname=A", &["default"]),
            ("alertname=A,severity=info", &["default"]),
            ("alertname=A,team=db", &["db"]),
            ("alertname=A,team=db,severity=critical", &["db-pager"]),
            (
                "alertname=A,severity=critical,cluster=core",
                &["pager", "never-reached-after-edge"],
            ),
            (
                "alertname=A,severity=critical,cluster=edge-1",
                &["pager", "edge"],
            ),
            ("alertname=A,severity=warning,cluster=edge-1", &["edge"]),
            ("alertname=A,severity=page,cluster=x", &["pager"]),
        ];
        for (l, want) in cases {
            let got: Vec<&str> = t
                .matches(&labels(l))
                .iter()
                .map(|n| n.receiver.as_str())
                .collect();
            assert_eq!(got, want.to_vec(), "{l}");
        }
    }

    #[test]
    fn group_keys_table() {
        let t = tree(TREE);
        let l = labels("alertname=A,severity=critical,cluster=edge-1,pod=p1");
        let got: Vec<String> = t
            .matches(&l)
            .iter()
            .map(|n| n.group_key(&n.group_labels(&l)))
            .collect();
        assert_eq!(
            got,
            vec![
                r#"{}/{severity=~"critical|page"}:{cluster="edge-1"}"#.to_string(),
                r#"{}/{severity!="info",cluster=~"edge-.*"}:{alertname="A", cluster="edge-1", pod="p1", severity="critical"}"#
                    .to_string(),
            ]
        );
        let root = &t.nodes[0];
        assert_eq!(
            root.group_key(&root.group_labels(&labels("alertname=A,x=y"))),
            r#"{}:{alertname="A"}"#
        );
        // a missing group_by label is left out, not grouped as ""
        assert_eq!(root.group_key(&root.group_labels(&labels("x=y"))), "{}:{}");
        // inherited timers
        let db_pager = t.nodes.iter().find(|n| n.receiver == "db-pager").unwrap();
        assert_eq!(db_pager.key, r#"{}/{team="db"}/{severity="critical"}"#);
        assert_eq!(db_pager.group_by, vec!["alertname".to_string()]);
        assert_eq!(db_pager.group_wait, Duration::from_secs(30));
        assert_eq!(db_pager.repeat_interval, Duration::from_secs(4 * 3600));
    }
}
