//! One scrape's HTTP exchange: the response body read up to `body_size_limit` (a
//! body is never read past it), then, off the runtime thread, gzip-decoded up to the
//! same limit on the decoded size, as Prometheus does.

use super::deadline::{Deadline, Expired};
use super::parse::{self, Exposition, Format, ParseFailure};
use super::{ScrapeError, ScrapeTarget, ACCEPT};
use std::io::Read;
use std::time::Instant;

/// A response body as received.
#[derive(Debug)]
pub struct Body {
    pub bytes: Vec<u8>,
    pub format: Format,
    /// `Content-Encoding: gzip`: `bytes` are compressed.
    pub gzip: bool,
    /// The decoded size it may have (`u64::MAX`: no limit).
    pub limit: u64,
}

/// The most allocated ahead for a body: a `Content-Length` is only a claim.
const PREALLOCATE_MAX: u64 = 16 << 20;

/// `body_size_limit` as a byte count; its `0` is no limit, as in Prometheus.
fn effective(limit: u64) -> u64 {
    if limit == 0 {
        u64::MAX
    } else {
        limit
    }
}

/// How many compressed bytes a gzip body of at most `limit` decoded bytes can take:
/// deflate's worst case (stored blocks, 5 bytes per 64 KiB) and the gzip framing. A
/// body bigger than that cannot fit the limit; reading stops there.
fn compressed_cap(limit: u64) -> u64 {
    limit.saturating_add(limit / 4096).saturating_add(4096)
}

/// Fetches `target`'s exposition, reading at most `body_size_limit` bytes of it (`0`:
/// no limit); gives up at `deadline`.
pub async fn fetch(
    client: &reqwest::Client,
    target: &ScrapeTarget,
    body_size_limit: u64,
    deadline: Instant,
) -> Result<Body, ScrapeError> {
    let timeout = target.timeout.min(target.interval);
    let limit = effective(body_size_limit);
    let work = async {
        let mut resp = client
            .get(&target.url)
            .header(http::header::ACCEPT, ACCEPT)
            .header(http::header::ACCEPT_ENCODING, "gzip")
            .header(
                "X-Prometheus-Scrape-Timeout-Seconds",
                format!("{}", timeout.as_secs_f64()),
            )
            .send()
            .await
            .map_err(|e| ScrapeError::Connect(e.without_url()))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(resp.status().as_u16()));
        }
        let headers = resp.headers();
        let format = Format::from_content_type(
            headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok()),
        );
        let gzip = headers
            .get(http::header::CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
        let cap = if gzip { compressed_cap(limit) } else { limit };
        if resp.content_length().is_some_and(|n| n > cap) {
            return Err(ScrapeError::TooLarge(limit));
        }
        // Sized once from the announced length (within the cap, already checked): no
        // copies while a big body grows.
        let announced = resp.content_length().unwrap_or(0).min(PREALLOCATE_MAX);
        let mut bytes = Vec::with_capacity(announced as usize);
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| ScrapeError::Connect(e.without_url()))?
        {
            if (bytes.len() + chunk.len()) as u64 > cap {
                return Err(ScrapeError::TooLarge(limit));
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(Body {
            bytes,
            format,
            gzip,
            limit,
        })
    };
    match tokio::time::timeout_at(deadline.into(), work).await {
        Ok(r) => r,
        Err(_) => Err(ScrapeError::Timeout(timeout)),
    }
}

impl Body {
    /// The exposition, parsed: gzip-decoded (stopping once over the limit), checked as
    /// UTF-8, parsed with `sample_limit` (`0`: none). CPU work: call it off the
    /// runtime thread.
    pub fn parse(self, sample_limit: u64, deadline: &Deadline) -> Result<Exposition, ScrapeError> {
        let format = self.format;
        let text = self.text(deadline)?;
        parse::parse_within(&text, format, sample_limit, deadline).map_err(|e| match e {
            ParseFailure::Invalid(e) => ScrapeError::Invalid(e),
            ParseFailure::SampleLimit { limit } => {
                ScrapeError::Limit(super::limits::LimitError::Samples { limit })
            }
            ParseFailure::Expired(Expired) => ScrapeError::Deadline,
        })
    }

    fn text(self, deadline: &Deadline) -> Result<String, ScrapeError> {
        let bytes = if self.gzip {
            gunzip(&self.bytes, self.limit, deadline)?
        } else {
            self.bytes
        };
        String::from_utf8(bytes).map_err(ScrapeError::NotUtf8)
    }
}

/// Decodes a gzip body (all its members, as Go's reader), failing as soon as the
/// output passes `limit`.
fn gunzip(compressed: &[u8], limit: u64, deadline: &Deadline) -> Result<Vec<u8>, ScrapeError> {
    let mut decoder = flate2::read::MultiGzDecoder::new(compressed);
    let guess = (compressed.len() as u64).saturating_mul(4).min(limit);
    let mut out = Vec::with_capacity(guess.min(PREALLOCATE_MAX) as usize);
    let mut chunk = vec![0u8; 64 << 10];
    loop {
        deadline.check().map_err(|Expired| ScrapeError::Deadline)?;
        let n = decoder.read(&mut chunk).map_err(ScrapeError::Gzip)?;
        if n == 0 {
            return Ok(out);
        }
        if (out.len() + n) as u64 > limit {
            return Err(ScrapeError::TooLarge(limit));
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn body(bytes: Vec<u8>, gzip: bool, limit: u64) -> Body {
        Body {
            bytes,
            format: Format::Text,
            gzip,
            limit,
        }
    }

    #[test]
    fn gzip_bodies_are_limited_on_their_decoded_size() {
        let text = "x 1\n".repeat(100_000);
        let packed = gz(text.as_bytes());
        assert!(packed.len() < 10_000, "{}", packed.len());
        let none = Deadline::none();
        let e = body(packed.clone(), true, 300_000)
            .parse(0, &none)
            .unwrap_err();
        assert!(matches!(e, ScrapeError::TooLarge(300_000)), "{e}");
        assert_eq!(e.reason(), "body_size_limit");
        let exp = body(packed, true, 400_000).parse(0, &none).unwrap();
        assert_eq!(exp.samples.len(), 100_000);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit() {
        // 1 GiB of zeros packs into about 1 MiB; decoding stops after 1 MiB + 64 KiB.
        let mut e = GzEncoder::new(Vec::new(), flate2::Compression::best());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        let bomb = e.finish().unwrap();
        let r = gunzip(&bomb, 1 << 20, &Deadline::none());
        assert!(matches!(r, Err(ScrapeError::TooLarge(_))));
    }

    #[test]
    fn broken_gzip_and_the_deadline_fail_the_scrape() {
        let none = Deadline::none();
        let e = body(b"not gzip".to_vec(), true, 1 << 20)
            .parse(0, &none)
            .unwrap_err();
        assert_eq!(e.reason(), "invalid_exposition");
        let past = Deadline::at(Instant::now());
        let packed = gz(b"x 1\n");
        let e = body(packed, true, 1 << 20).parse(0, &past).unwrap_err();
        assert_eq!(e.reason(), "timeout");
    }

    #[test]
    fn the_compressed_cap_leaves_room_for_incompressible_bodies() {
        use rand::RngCore;
        let mut noise = vec![0u8; 200_000];
        rand::rng().fill_bytes(&mut noise);
        let packed = gz(&noise);
        assert!(
            packed.len() > noise.len(),
            "random bytes grow when deflated"
        );
        assert!(packed.len() as u64 <= compressed_cap(noise.len() as u64));
    }
}
