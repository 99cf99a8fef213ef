//! A webhook POST: one HTTP/1.1 request on a fresh connection (TLS for https), its answer's
//! status, all within one deadline. Receivers are few and events rare, so no pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use thiserror::Error;
use tokio::net::TcpStream;
use tokio_rustls::rustls;

/// A receiver's URL, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// As configured: what the outbox rows name.
    pub url: String,
    tls: bool,
    /// For the lookup: without an IPv6 address's brackets.
    host: String,
    port: u16,
    /// The `Host` header.
    authority: String,
    path_and_query: String,
}

impl Target {
    /// Accepts `http://` and `https://` URLs that name a host; the message says what is wrong.
    pub fn parse(url: &str) -> Result<Target, String> {
        let lower = url.to_ascii_lowercase();
        if !lower.starts_with("http://") && !lower.starts_with("https://") {
            return Err("use an http:// or https:// URL".into());
        }
        let uri: Uri = url.parse().map_err(|e| format!("not a URL ({e})"))?;
        let tls = uri.scheme() == Some(&hyper::http::uri::Scheme::HTTPS);
        let authority = uri.authority().ok_or("the URL names no host")?;
        if authority.as_str().contains('@') {
            return Err("credentials in the URL are not supported".into());
        }
        let host = authority.host();
        if host.is_empty() {
            return Err("the URL names no host".into());
        }
        Ok(Target {
            url: url.to_owned(),
            tls,
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            authority: authority.as_str().to_owned(),
            path_and_query: uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        })
    }
}

/// Why a POST got no answer.
#[derive(Debug, Error)]
pub(crate) enum SendError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("connect {host}:{port}: {source}")]
    Connect {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("TLS server name {0:?}: not a valid DNS name or IP address")]
    ServerName(String),
    #[error("TLS with {host}: {source}")]
    Tls { host: String, source: std::io::Error },
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("the request cannot be made: {0}")]
    Request(#[from] hyper::http::Error),
}

/// Sends webhooks.
pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl Client {
    /// Trusts the public roots (webpki-roots), with the ring provider.
    pub(crate) fn new(timeout: Duration) -> Result<Client, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Client {
            tls: tokio_rustls::TlsConnector::from(Arc::new(config)),
            timeout,
        })
    }

    /// POSTs `body` to `target` with `headers`; the answer's status.
    pub(crate) async fn post(
        &self,
        target: &Target,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<StatusCode, SendError> {
        tokio::time::timeout(self.timeout, self.exchange(target, headers, body))
            .await
            .unwrap_or(Err(SendError::Timeout(self.timeout)))
    }

    async fn exchange(
        &self,
        target: &Target,
        headers: &[(&'static str, String)],
        body: Bytes,
    ) -> Result<StatusCode, SendError> {
        let tcp = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(|source| SendError::Connect {
                host: target.host.clone(),
                port: target.port,
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let mut request = Request::post(target.path_and_query.as_str())
            .header(HOST, target.authority.as_str())
            .header(CONTENT_TYPE, "application/json")
            .header(USER_AGENT, concat!("Oxcast/", env!("CARGO_PKG_VERSION")));
        for (name, value) in headers {
            request = request.header(*name, value.as_str());
        }
        let request = request.body(Full::new(body))?;
        if !target.tls {
            return exchange(TokioIo::new(tcp), request).await;
        }
        let name = rustls_pki_types::ServerName::try_from(target.host.clone())
            .map_err(|_| SendError::ServerName(target.host.clone()))?;
        let tls = self
            .tls
            .connect(name, tcp)
            .await
            .map_err(|source| SendError::Tls {
                host: target.host.clone(),
                source,
            })?;
        exchange(TokioIo::new(tls), request).await
    }
}

/// One request on `io`, driving the connection until its answer's head arrives.
async fn exchange<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<StatusCode, SendError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
    let mut connection = std::pin::pin!(connection);
    let mut answer = std::pin::pin!(sender.send_request(request));
    tokio::select! {
        biased;
        answer = &mut answer => return Ok(answer?.status()),
        ended = &mut connection => ended?,
    }
    // The receiver answered and closed in one go: the answer was handed over as the connection
    // ended. Without one, this is the error saying so.
    Ok(answer.await?.status())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("https://hooks.example.com/oxcast?x=1").unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("hooks.example.com", 443));
        assert_eq!(t.path_and_query, "/oxcast?x=1");
        let t = Target::parse("http://[::1]:8081").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.authority.as_str()),
            ("::1", 8081, "[::1]:8081")
        );
        assert_eq!(t.path_and_query, "/");
        for bad in [
            "ftp://x/",
            "hooks.example.com/x",
            "http://",
            "http://u:p@x/",
            "not a url",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
