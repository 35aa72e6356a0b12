//! Authentication, headers, TLS and Retry-After.

use super::*;

#[tokio::test]
async fn credentials_and_headers_go_with_every_request() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\n").unwrap();
    let basic = Recorder::start(200, &[]).await;
    let bearer = Recorder::start(200, &[]).await;
    let h1 = f.start(&format!(
        "url: {}/api/v1/write\nname: basic\nheaders: {{X-Scope-OrgID: tenant-1}}\n\
         basic_auth: {{username: edge, password_file: {}}}\nqueue_config: {{batch_send_deadline: 10ms}}\n",
        basic.url(),
        pw.display()
    ));
    let h2 = f.start(&format!(
        "url: {}/api/v1/write\nname: bearer\nauthorization: {{credentials: tok}}\n\
         queue_config: {{batch_send_deadline: 10ms}}\n",
        bearer.url()
    ));
    f.append(&[sample("a", &[], 1.0, 1)]);
    wait_delivered(&basic, 1).await;
    wait_delivered(&bearer, 1).await;
    let hdr = |r: &Recorder, k: &str| {
        r.delivered()[0]
            .headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    // base64("edge:s3cret"): the file's trailing newline is not part of the password.
    assert_eq!(hdr(&basic, "authorization"), "Basic ZWRnZTpzM2NyZXQ=");
    assert_eq!(hdr(&basic, "x-scope-orgid"), "tenant-1");
    assert_eq!(hdr(&bearer, "authorization"), "Bearer tok");
    f.stop.cancel();
    h1.await.unwrap();
    h2.await.unwrap();
}

#[tokio::test]
async fn an_unreadable_tls_file_is_a_start_error_naming_it() {
    let f = Fixture::new();
    let cfg = config(
        "url: https://127.0.0.1:1/api/v1/write\ntls_config: {ca_file: /nonexistent/ca.pem}\n",
    );
    let reader = f.wal.reader(&cfg.name, &cfg.url.0).unwrap();
    let err = RemoteWriter::start(&cfg, reader, &f.metrics, f.stop.clone(), Options::default())
        .expect_err("start fails");
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
}

#[test]
fn retry_after_is_seconds_or_an_http_date() {
    let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        crate::remote::client::retry_after("7", now),
        Some(Duration::from_secs(7))
    );
    let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
    assert_eq!(
        crate::remote::client::retry_after(&later, now),
        Some(Duration::from_secs(30))
    );
    let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
    assert_eq!(
        crate::remote::client::retry_after(&earlier, now),
        Some(Duration::ZERO)
    );
    assert_eq!(crate::remote::client::retry_after("soon", now), None);
}

#[tokio::test]
async fn tls_with_a_private_ca_a_client_certificate_and_a_server_name() {
    let f = Fixture::new();
    let dir = tempfile::tempdir().unwrap();
    let certs = Certs::generate(dir.path(), "tsdb.example");
    let (ca, cert, key) = (
        certs.ca.display().to_string(),
        certs.client_cert.display().to_string(),
        certs.client_key.display().to_string(),
    );
    let cases = [
        (
            "right",
            format!(
                "{{ca_file: {ca}, cert_file: {cert}, key_file: {key}, server_name: tsdb.example}}"
            ),
            true,
        ),
        (
            "insecure",
            format!("{{insecure_skip_verify: true, cert_file: {cert}, key_file: {key}}}"),
            true,
        ),
        // The certificate is for tsdb.example, not for 127.0.0.1.
        (
            "no-server-name",
            format!("{{ca_file: {ca}, cert_file: {cert}, key_file: {key}}}"),
            false,
        ),
        // The endpoint wants a client certificate.
        (
            "no-client-cert",
            format!("{{ca_file: {ca}, server_name: tsdb.example}}"),
            false,
        ),
    ];
    let mut running = Vec::new();
    for (name, tls, _) in &cases {
        let rec = Recorder::start_tls(200, &[], &certs, true).await;
        let url = format!("https://127.0.0.1:{}", rec.addr.port());
        let h = f.start(&format!(
            "url: {url}/api/v1/write\nname: {name}\nremote_timeout: 2s\nmetadata_config: {{send: false}}\ntls_config: {tls}\n\
             queue_config: {{min_backoff: 10ms, max_backoff: 50ms, batch_send_deadline: 10ms}}\n"
        ));
        running.push((rec, url, h));
    }
    f.append(&[sample("a", &[], 1.0, 1)]);
    for ((name, _, ok), (rec, url, _)) in cases.iter().zip(&running) {
        let series = |m: &str| format!("{m}{{url=\"{url}/api/v1/write\"}}");
        if *ok {
            wait_delivered(rec, 1).await;
        } else {
            eventually(WAIT, &format!("{name}: retries"), || async {
                f.scrape()
                    .get_or_zero(&series("edgewatch_remote_write_retried_samples_total"))
                    >= 2.0
            })
            .await;
            assert!(rec.requests().is_empty(), "{name}: no request got through");
            assert_eq!(
                f.scrape()
                    .get_or_zero(&series("edgewatch_remote_write_samples_total")),
                0.0,
                "{name}"
            );
        }
    }
    f.stop.cancel();
    for (_, _, h) in running {
        h.await.unwrap();
    }
}
