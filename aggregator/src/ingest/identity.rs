//! Who is sending: the cluster a request comes from, decided at the core from its
//! credentials, never from what the request says about itself.
//!
//! With `auth.clusters` (bearer tokens) or a client CA on the OTLP receiver
//! (mTLS: a verified certificate's Subject CN is the cluster name), every request
//! needs valid credentials; one without gets UNAUTHENTICATED / 401 before anything
//! is read from it, so nothing is stored and no replay window moves. With both, the
//! certificate decides and must name a cluster of `auth.clusters`; a token sent
//! with it must be that cluster's.
//!
//! The identity is authoritative: its cluster replaces every resource's
//! `k8s.cluster.name` during conversion (see [`crate::convert::Authority`]), and
//! the collector instance id of a forwarded batch is namespaced by it, so one
//! cluster can neither write another's series nor move another's replay window
//! (its `x-edgewatch-floor` included). A namespaced id is `<cluster>\x1f<id>`: a
//! header value cannot carry `\x1f`, so it never equals an id kept by an
//! aggregator that ran without authentication. Those windows are not taken over
//! when authentication is turned on (they may have been written by anyone): each
//! collector starts with an empty window, so a batch it re-sends from before the
//! switch is stored once more (the same samples again, not lost), and the old
//! windows stay in the log, unused, a few bytes each.

use crate::convert::Authority;
use edgewatch_config::auth::AuthConfig;
use edgewatch_otlp::{ExportContext, ExportError};
use prometheus::{IntCounterVec, Opts, Registry};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

/// Separates the cluster from the collector id in a namespaced id.
const NAMESPACE_SEP: char = '\u{1f}';

/// (cluster, claimed) pairs logged at most; further mismatches are only counted.
const LOGGED_MISMATCHES_MAX: usize = 1024;

/// Who may send, and how they prove it.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Token → cluster.
    tokens: HashMap<String, Arc<str>>,
    /// The clusters of `auth.clusters`.
    clusters: HashSet<Arc<str>>,
    /// A verified client certificate is required (the receiver has a client CA).
    client_certs: bool,
}

/// Why a request was refused (the `reason` label of `edgewatch_auth_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No bearer token where tokens are required.
    Missing,
    /// A token no cluster has.
    InvalidToken,
    /// No verified client certificate where one is required.
    NoClientCert,
    /// A certificate whose CN is empty.
    InvalidClientCert,
    /// A certificate whose CN is not a cluster of `auth.clusters`.
    UnknownCluster,
    /// A valid token of another cluster than the certificate's.
    ClusterMismatch,
}

impl Failure {
    pub const ALL: [Failure; 6] = [
        Failure::Missing,
        Failure::InvalidToken,
        Failure::NoClientCert,
        Failure::InvalidClientCert,
        Failure::UnknownCluster,
        Failure::ClusterMismatch,
    ];

    pub fn reason(self) -> &'static str {
        match self {
            Failure::Missing => "missing",
            Failure::InvalidToken => "invalid_token",
            Failure::NoClientCert => "no_client_cert",
            Failure::InvalidClientCert => "invalid_client_cert",
            Failure::UnknownCluster => "unknown_cluster",
            Failure::ClusterMismatch => "cluster_mismatch",
        }
    }

    /// What the sender is told (never which tokens or clusters exist).
    fn message(self) -> &'static str {
        match self {
            Failure::Missing => "an Authorization: Bearer token is required",
            Failure::InvalidToken => "the bearer token is not valid",
            Failure::NoClientCert => "a verified client certificate is required",
            Failure::InvalidClientCert => "the client certificate has no Subject CN",
            Failure::UnknownCluster => {
                "the client certificate's CN is not a cluster this aggregator accepts"
            }
            Failure::ClusterMismatch => {
                "the bearer token belongs to another cluster than the client certificate"
            }
        }
    }
}

impl Policy {
    /// `client_certs`: the OTLP receiver requires a verified client certificate.
    pub fn new(auth: &AuthConfig, client_certs: bool) -> Policy {
        let mut p = Policy {
            client_certs,
            ..Policy::default()
        };
        for c in &auth.clusters.0 {
            let cluster: Arc<str> = c.cluster.as_str().into();
            p.tokens
                .insert(c.token.as_str().to_string(), cluster.clone());
            p.clusters.insert(cluster);
        }
        p
    }

    /// True when no credentials are required.
    pub fn is_open(&self) -> bool {
        self.tokens.is_empty() && !self.client_certs
    }

    /// The cluster a request's credentials prove; `Ok(None)` when the policy is
    /// open. A token is looked up in a map: its random hash keys leave nothing to
    /// time, and the comparison runs only on a full hash match.
    pub fn decide(
        &self,
        client_cn: Option<&str>,
        bearer_token: Option<&str>,
    ) -> Result<Option<Arc<str>>, Failure> {
        if self.is_open() {
            return Ok(None);
        }
        let by_token = |t: &str| self.tokens.get(t).ok_or(Failure::InvalidToken);
        if !self.client_certs {
            let token = bearer_token.ok_or(Failure::Missing)?;
            return by_token(token).map(|c| Some(c.clone()));
        }
        let cn = client_cn.ok_or(Failure::NoClientCert)?;
        if cn.is_empty() {
            return Err(Failure::InvalidClientCert);
        }
        if self.tokens.is_empty() {
            return Ok(Some(cn.into()));
        }
        let Some(cluster) = self.clusters.get(cn) else {
            return Err(Failure::UnknownCluster);
        };
        if let Some(token) = bearer_token {
            if **by_token(token)? != *cn {
                return Err(Failure::ClusterMismatch);
            }
        }
        Ok(Some(cluster.clone()))
    }
}

/// A collector id scoped to its cluster (see the module documentation).
pub fn namespaced(cluster: &str, collector_id: &str) -> String {
    let mut s = String::with_capacity(cluster.len() + 1 + collector_id.len());
    s.push_str(cluster);
    s.push(NAMESPACE_SEP);
    s.push_str(collector_id);
    s
}

/// The policy with its metrics, at the entry of ingest.
pub struct Gate {
    policy: Policy,
    failures: IntCounterVec,
    overrides: Arc<Overrides>,
}

/// Claims that the identity overrode: counted per cluster, logged once per pair.
struct Overrides {
    counter: IntCounterVec,
    logged: Mutex<Logged>,
}

/// The (cluster, claimed) pairs logged so far.
#[derive(Default)]
struct Logged {
    by_cluster: HashMap<Arc<str>, HashSet<String>>,
    pairs: usize,
}

impl Gate {
    /// Registers `edgewatch_auth_failures_total{reason}` and
    /// `edgewatch_identity_overrides_total{cluster}`.
    pub fn new(policy: Policy, registry: &Registry) -> Result<Gate, prometheus::Error> {
        let failures = IntCounterVec::new(
            Opts::new(
                "edgewatch_auth_failures_total",
                "Requests refused for missing or invalid credentials, by reason.",
            ),
            &["reason"],
        )?;
        for f in Failure::ALL {
            failures.with_label_values(&[f.reason()]);
        }
        let overrides = IntCounterVec::new(
            Opts::new(
                "edgewatch_identity_overrides_total",
                "Resources whose k8s.cluster.name differed from the cluster their sender authenticated as (overwritten).",
            ),
            &["cluster"],
        )?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(overrides.clone()))?;
        Ok(Gate {
            policy,
            failures,
            overrides: Arc::new(Overrides {
                counter: overrides,
                logged: Mutex::new(Logged::default()),
            }),
        })
    }

    /// `edgewatch_auth_failures_total`, for other listeners' failures.
    pub fn failures(&self) -> IntCounterVec {
        self.failures.clone()
    }

    /// Checks a request's credentials. With an identity, the batch's collector id
    /// comes back namespaced by its cluster.
    pub fn admit(
        &self,
        mut ctx: ExportContext,
    ) -> Result<(ExportContext, Option<Identity>), ExportError> {
        let decided = self
            .policy
            .decide(ctx.client_cn.as_deref(), ctx.bearer_token.as_deref());
        let cluster = match decided {
            Ok(Some(c)) => c,
            Ok(None) => return Ok((ctx, None)),
            Err(f) => {
                self.failures.with_label_values(&[f.reason()]).inc();
                tracing::debug!(reason = f.reason(), peer = ?ctx.peer, "request refused");
                return Err(ExportError::Unauthenticated(f.message().into()));
            }
        };
        if let Some(b) = &mut ctx.batch {
            b.collector_id = namespaced(&cluster, &b.collector_id);
        }
        let id = Identity {
            cluster,
            overrides: self.overrides.clone(),
        };
        Ok((ctx, Some(id)))
    }
}

/// An authenticated cluster, handed to the converter.
#[derive(Clone)]
pub struct Identity {
    cluster: Arc<str>,
    overrides: Arc<Overrides>,
}

impl Authority for Identity {
    fn cluster(&self) -> &str {
        &self.cluster
    }

    fn overridden(&self, claimed: &str) {
        let o = &self.overrides;
        o.counter.with_label_values(&[&self.cluster]).inc();
        let mut logged = o.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.pairs >= LOGGED_MISMATCHES_MAX
            || logged
                .by_cluster
                .get(&self.cluster)
                .is_some_and(|c| c.contains(claimed))
        {
            return;
        }
        tracing::warn!(
            cluster = %self.cluster,
            claimed,
            "a sender claimed another cluster than it authenticated as; its series are stored as its own cluster"
        );
        logged
            .by_cluster
            .entry(self.cluster.clone())
            .or_default()
            .insert(claimed.to_string());
        logged.pairs += 1;
    }
}

#[cfg(test)]
mod tests;
