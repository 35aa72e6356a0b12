//! Fleet status page at `/`: a clusters × apps grid coloured by deployment
//! state, the clusters this aggregator owns (and those reporting here that it
//! does not), per-node last seen and buffer backlog, and the firing alerts.
//! Server-rendered HTML (works without JS); a small script polls
//! `/api/v1/fleet`, `/api/v1/deployments` and `/api/v1/alerts` every 2 s and
//! redraws the same sections (a 404 from an API shows as "not enabled").
//! No external resources, and nothing inline: the style sheet and the script are
//! served at `/static/`, so the page complies with [`security::CONTENT_SECURITY_POLICY`].

pub mod security;

use std::fmt::Write as _;

use crate::fleet::{Fleet, FleetView};
use crate::reconcile::{self, Handle, Snapshot};

/// `GET /` and its assets. `deployments` is the reconciler's [`Handle`], when
/// there is one.
pub fn router(fleet: Fleet, deployments: Option<Handle>) -> axum::Router {
    use axum::routing::get;
    let asset = |content_type: &'static str, body: &'static str| {
        get(move || async move { ([(axum::http::header::CONTENT_TYPE, content_type)], body) })
    };
    axum::Router::new()
        .route("/static/fleet.css", asset("text/css; charset=utf-8", STYLE))
        .route(
            "/static/fleet.js",
            asset("text/javascript; charset=utf-8", SCRIPT),
        )
        .route(
            "/",
            get(move || {
                let fleet = fleet.clone();
                let deployments = deployments.clone();
                async move {
                    let fleet = fleet.view(crate::now_ms());
                    let snap = deployments
                        .as_ref()
                        .map(|h| h.read().unwrap_or_else(|e| e.into_inner()).clone());
                    axum::response::Html(render(&fleet, snap.as_ref()))
                }
            }),
        )
}

/// Serves `app` on `listener` until `shutdown` (for embedding and tests), with the
/// timeouts and bounds of every edgewatch HTTP server.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<()> {
    edgewatch_tls::serve::serve_http(listener, None, app, shutdown.cancelled_owned()).await
}

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn short(d: &str) -> String {
    d.split(',')
        .map(|d| {
            let h = d.strip_prefix("sha256:").unwrap_or(d);
            h.chars().take(12).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn grid_html(snap: Option<&Snapshot>) -> String {
    let Some(s) = snap else {
        return "<p class=\"note\">Deployment reconciler not enabled.</p>".into();
    };
    let data = reconcile::deployments_json(s);
    let mut out = String::new();
    let _ = write!(
        out,
        "<p class=\"rev\">Desired revision <code>{}</code>{}</p>",
        escape(&s.revision),
        if s.gitops_stale {
            " <span class=\"warn\">(latest read failed; last good state in force)</span>"
        } else {
            ""
        }
    );
    if !s.gitops_errors.is_empty() {
        out.push_str("<ul class=\"gitops-errors\">");
        for e in &s.gitops_errors {
            let _ = write!(out, "<li>{}</li>", escape(e));
        }
        out.push_str("</ul>");
    }
    let clusters: Vec<&str> = data["clusters"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let apps: Vec<&str> = data["apps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    if clusters.is_empty() {
        out.push_str("<p class=\"note\">No deployments.</p>");
        return out;
    }
    out.push_str("<table class=\"grid\"><thead><tr><th>cluster</th>");
    for a in &apps {
        let _ = write!(out, "<th>{}</th>", escape(a));
    }
    out.push_str("</tr></thead><tbody>");
    for c in &clusters {
        let _ = write!(out, "<tr><th>{}</th>", escape(c));
        for a in &apps {
            match s.status.get(c, a) {
                Some(e) => {
                    let _ = write!(
                        out,
                        "<td class=\"cell state-{st}\" data-cluster=\"{c}\" data-app=\"{a}\" data-state=\"{st}\" title=\"desired {dd} observed {od}\">{st}<br><small>{sod}</small></td>",
                        st = e.state.as_str(),
                        c = escape(c),
                        a = escape(a),
                        dd = escape(&e.desired_digest),
                        od = escape(&e.observed_digest),
                        sod = escape(&short(&e.observed_digest)),
                    );
                }
                None => out.push_str("<td class=\"cell none\"></td>"),
            }
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table><ul class=\"rollouts\">");
    for r in reconcile::rollouts(&s.status, &s.revision) {
        let _ = write!(
            out,
            "<li class=\"rollout\" data-app=\"{}\">{}: {}</li>",
            escape(&r.app),
            escape(&r.app),
            escape(&r.summary)
        );
    }
    out.push_str("</ul>");
    out
}

/// Which clusters this aggregator owns; per cluster: reported or not, owned or not.
fn clusters_html(f: &FleetView) -> String {
    let mut out = if f.owns_every_cluster {
        "<p class=\"ownership\">This aggregator owns every cluster that reports here.</p>"
            .to_owned()
    } else {
        let names: Vec<String> = f
            .owned_clusters
            .iter()
            .map(|c| format!("<code>{}</code>", escape(c)))
            .collect();
        format!(
            "<p class=\"ownership\">This aggregator owns {}.</p>",
            names.join(", ")
        )
    };
    if f.clusters.is_empty() {
        out.push_str("<p class=\"note\">No collectors have reported.</p>");
        return out;
    }
    out.push_str("<table class=\"clusters\"><thead><tr><th>cluster</th><th>status</th><th>owner</th><th>nodes</th><th>last seen</th></tr></thead><tbody>");
    for c in &f.clusters {
        let status = match (c.reported, c.up) {
            (false, _) => "never reported",
            (true, true) => "up",
            (true, false) => "down",
        };
        let _ = write!(
            out,
            "<tr class=\"cluster{cls}\" data-cluster=\"{n}\" data-owned=\"{o}\" data-reported=\"{r}\"><td>{n}</td><td>{status}</td><td>{owner}</td><td>{nodes}</td><td>{seen}</td></tr>",
            cls = if c.owned { "" } else { " unowned" },
            n = escape(&c.name),
            o = c.owned,
            r = c.reported,
            owner = if c.owned { "this aggregator" } else { "not owned by this aggregator" },
            nodes = c.nodes.len(),
            seen = c
                .last_seen_age_seconds
                .map(|a| format!("{a:.0}s ago"))
                .unwrap_or_else(|| "-".into()),
        );
    }
    out.push_str("</tbody></table>");
    out
}

fn nodes_html(f: &FleetView) -> String {
    if f.clusters.is_empty() {
        return "<p class=\"note\">No collectors have reported.</p>".into();
    }
    let mut out = String::from(
        "<table class=\"nodes\"><thead><tr><th>cluster</th><th>node</th><th>last seen</th><th>buffer entries</th><th>buffer bytes</th><th>oldest buffered</th><th>collector</th></tr></thead><tbody>",
    );
    let opt = |v: Option<f64>| v.map(|v| format!("{v:.0}")).unwrap_or_else(|| "-".into());
    for c in &f.clusters {
        for n in &c.nodes {
            let _ = write!(
                out,
                "<tr class=\"node {up}\" data-cluster=\"{c}\" data-node=\"{n}\"><td>{c}</td><td>{n}</td><td class=\"last-seen\">{age:.0}s ago</td><td>{e}</td><td>{b}</td><td>{o}</td><td>{v}</td></tr>",
                up = if n.up { "up" } else { "down" },
                c = escape(&n.cluster),
                n = escape(&n.node),
                age = n.last_seen_age_seconds,
                e = opt(n.buffer_entries),
                b = opt(n.buffer_bytes),
                o = n.buffer_oldest_age_seconds.map(|v| format!("{v:.0}s")).unwrap_or_else(|| "-".into()),
                v = escape(n.collector_version.as_deref().unwrap_or("-")),
            );
        }
    }
    out.push_str("</tbody></table>");
    out
}

/// The whole page.
pub fn render(fleet: &FleetView, snap: Option<&Snapshot>) -> String {
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgewatch fleet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="static/fleet.css">
</head>
<body data-updates="0">
<h1>edgewatch fleet</h1>
<p id="status" class="note">server-rendered</p>
<h2>Deployments</h2><div id="deployments">{grid}</div>
<h2>Clusters</h2><div id="clusters">{clusters}</div>
<h2>Nodes</h2><div id="nodes">{nodes}</div>
<h2>Firing alerts</h2><div id="alerts"><p class="note">loading…</p></div>
<script src="static/fleet.js"></script>
</body></html>
"#,
        grid = grid_html(snap),
        clusters = clusters_html(fleet),
        nodes = nodes_html(fleet),
    )
}

const STYLE: &str = r#"body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
.cell{text-align:center;font-weight:600}
.state-Synced{background:#c8f0c8} .state-Progressing{background:#cde3ff}
.state-Degraded{background:#ffb3b3} .state-OutOfSync{background:#ffd59a}
.state-Missing{background:#e8c8ff} .state-Unknown{background:#ddd}
.state-Unmanaged{background:#fff6b0}
tr.down td{color:#999} tr.unowned td{background:#fff0e0} .warn{color:#b00} .note{color:#666}
code,small{font-family:ui-monospace,monospace}
"#;

const SCRIPT: &str = r#"(function(){
'use strict';
function esc(s){return String(s==null?'':s).replace(/[&<>"']/g,function(c){return {'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;',"'":'&#39;'}[c];});}
function short(d){return String(d||'').split(',').filter(Boolean).map(function(x){return x.replace('sha256:','').slice(0,12);}).join(',');}
function get(url){return fetch(url,{cache:'no-store'}).then(function(r){if(r.status===404)return {missing:true};if(!r.ok)throw new Error(url+': '+r.status);return r.json().then(function(j){return {data:j.data};});});}
function grid(d){
  if(d.missing)return '<p class="note">Deployment reconciler not enabled.</p>';
  d=d.data;var h='<p class="rev">Desired revision <code>'+esc(d.revision)+'</code>'+(d.gitops.stale?' <span class="warn">(latest read failed; last good state in force)</span>':'')+'</p>';
  if(d.gitops.errors.length){h+='<ul class="gitops-errors">'+d.gitops.errors.map(function(e){return '<li>'+esc(e)+'</li>';}).join('')+'</ul>';}
  if(!d.clusters.length)return h+'<p class="note">No deployments.</p>';
  var by={};d.deployments.forEach(function(e){by[e.cluster+'\u0000'+e.app]=e;});
  h+='<table class="grid"><thead><tr><th>cluster</th>'+d.apps.map(function(a){return '<th>'+esc(a)+'</th>';}).join('')+'</tr></thead><tbody>';
  d.clusters.forEach(function(c){
    h+='<tr><th>'+esc(c)+'</th>';
    d.apps.forEach(function(a){var e=by[c+'\u0000'+a];
      if(!e){h+='<td class="cell none"></td>';return;}
      h+='<td class="cell state-'+esc(e.state)+'" data-cluster="'+esc(c)+'" data-app="'+esc(a)+'" data-state="'+esc(e.state)+'" title="desired '+esc(e.desired_digest)+' observed '+esc(e.observed_digest)+'">'+esc(e.state)+'<br><small>'+esc(short(e.observed_digest))+'</small></td>';});
    h+='</tr>';});
  h+='</tbody></table><ul class="rollouts">'+d.rollouts.map(function(r){return '<li class="rollout" data-app="'+esc(r.app)+'">'+esc(r.app)+': '+esc(r.summary)+'</li>';}).join('')+'</ul>';
  return h;}
function opt(v){return v==null?'-':Math.round(v);}
function clusters(d){
  if(d.missing)return '<p class="note">Fleet API not enabled.</p>';
  d=d.data;var h=d.owns_every_cluster?'<p class="ownership">This aggregator owns every cluster that reports here.</p>':
    '<p class="ownership">This aggregator owns '+d.owned_clusters.map(function(c){return '<code>'+esc(c)+'</code>';}).join(', ')+'.</p>';
  if(!d.clusters.length)return h+'<p class="note">No collectors have reported.</p>';
  h+='<table class="clusters"><thead><tr><th>cluster</th><th>status</th><th>owner</th><th>nodes</th><th>last seen</th></tr></thead><tbody>';
  d.clusters.forEach(function(c){
    h+='<tr class="cluster'+(c.owned?'':' unowned')+'" data-cluster="'+esc(c.name)+'" data-owned="'+c.owned+'" data-reported="'+c.reported+'"><td>'+esc(c.name)+'</td><td>'+(!c.reported?'never reported':c.up?'up':'down')+'</td><td>'+(c.owned?'this aggregator':'not owned by this aggregator')+'</td><td>'+c.nodes.length+'</td><td>'+(c.last_seen_age_seconds==null?'-':Math.round(c.last_seen_age_seconds)+'s ago')+'</td></tr>';});
  return h+'</tbody></table>';}
function nodes(d){
  if(d.missing)return '<p class="note">Fleet API not enabled.</p>';
  var cs=d.data.clusters;if(!cs.length)return '<p class="note">No collectors have reported.</p>';
  var h='<table class="nodes"><thead><tr><th>cluster</th><th>node</th><th>last seen</th><th>buffer entries</th><th>buffer bytes</th><th>oldest buffered</th><th>collector</th></tr></thead><tbody>';
  cs.forEach(function(c){c.nodes.forEach(function(n){
    h+='<tr class="node '+(n.up?'up':'down')+'" data-cluster="'+esc(n.cluster)+'" data-node="'+esc(n.node)+'"><td>'+esc(n.cluster)+'</td><td>'+esc(n.node)+'</td><td class="last-seen">'+Math.round(n.last_seen_age_seconds)+'s ago</td><td>'+opt(n.buffer_entries)+'</td><td>'+opt(n.buffer_bytes)+'</td><td>'+(n.buffer_oldest_age_seconds==null?'-':Math.round(n.buffer_oldest_age_seconds)+'s')+'</td><td>'+esc(n.collector_version||'-')+'</td></tr>';});});
  return h+'</tbody></table>';}
function alerts(d){
  if(d.missing)return '<p class="note alerts-missing">Alerts API not enabled.</p>';
  var as=(d.data&&d.data.alerts)||[];as=as.filter(function(a){return a.state==='firing';});
  if(!as.length)return '<p class="note alerts-none">No firing alerts.</p>';
  return '<ul class="alerts">'+as.map(function(a){var l=a.labels||{},an=a.annotations||{};
    return '<li class="alert" data-alertname="'+esc(l.alertname)+'"><b>'+esc(l.alertname)+'</b> '+esc(l.cluster||'')+' '+esc(l.app||l.node||'')+' '+esc(an.summary||'')+'</li>';}).join('')+'</ul>';}
function set(id,html){var el=document.getElementById(id);if(el.innerHTML!==html)el.innerHTML=html;}
function tick(){
  var n=0,failed=[];
  function done(){if(++n<3)return;var b=document.body;b.dataset.updates=String(Number(b.dataset.updates||0)+1);
    set('status',failed.length?'<span class="warn">update failed: '+esc(failed.join('; '))+'</span>':'updated '+new Date().toLocaleTimeString());}
  function run(url,views){get(url).then(function(d){views.forEach(function(v){set(v[0],v[1](d));});}).catch(function(e){failed.push(String(e.message||e));}).then(done);}
  run('api/v1/deployments',[['deployments',grid]]);
  run('api/v1/fleet',[['clusters',clusters],['nodes',nodes]]);
  run('api/v1/alerts',[['alerts',alerts]]);
}
tick();setInterval(tick,2000);
})();"#;
