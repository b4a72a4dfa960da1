//! HTTPS clients for integration tests: hyper over tokio-rustls, trusting exactly one CA.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::body::{Bytes, Frame};
use hyper::client::conn::http1;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Every wait in these tests polls a condition until this deadline.
pub const DEADLINE: Duration = Duration::from_secs(10);
/// Poll period of [`eventually`].
pub const POLL: Duration = Duration::from_millis(20);

/// A boxed request body.
pub type Body = BoxBody<Bytes, Infallible>;

pub fn client_config(
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// [`client_config`] for HTTP/1.1 that presents `identity` (a PEM chain and key) as its client
/// certificate.
pub fn client_config_as(ca: &CertificateDer<'static>, identity: &driftguard::certs::IssuedCert) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let chain = driftguard::certs::parse_cert_chain(identity.cert_pem.as_bytes(), "client certificate").unwrap();
    let key = driftguard::certs::parse_private_key(identity.key_pem.as_bytes(), "client key").unwrap();
    let mut config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

pub async fn tls_connect_with(addr: SocketAddr, config: Arc<ClientConfig>) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(config)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

pub async fn tls_connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> std::io::Result<TlsStream<TcpStream>> {
    tls_connect_with(addr, client_config(ca, &[b"http/1.1"], rustls::DEFAULT_VERSIONS)).await
}

pub fn presented_leaf(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().unwrap()[0].clone()
}

pub async fn http1_over<T>(io: T) -> http1::SendRequest<Body>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(io)).await.unwrap();
    tokio::spawn(connection);
    sender
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

pub fn empty() -> Body {
    Empty::new().boxed()
}

/// A body of unknown length (sent chunked).
pub struct Chunked(pub VecDeque<Bytes>);

impl hyper::body::Body for Chunked {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

pub struct Answer {
    pub status: StatusCode,
    pub content_type: String,
    pub body: String,
}

impl Answer {
    pub fn error_message(&self) -> String {
        assert_eq!(self.content_type, "application/json", "{}", self.body);
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap();
        json["error"].as_str().unwrap().to_owned()
    }
}

pub async fn send(
    sender: &mut http1::SendRequest<Body>,
    method: &str,
    path: &str,
    body: Body,
) -> hyper::Result<Answer> {
    sender.ready().await?;
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(body)
        .unwrap();
    answer(sender.send_request(request).await?).await
}

pub async fn answer(response: hyper::Response<hyper::body::Incoming>) -> hyper::Result<Answer> {
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = response.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    })
}

/// A new HTTP/1.1 connection trusting `ca`.
pub async fn connect(addr: SocketAddr, ca: &CertificateDer<'static>) -> http1::SendRequest<Body> {
    http1_over(tls_connect(addr, ca).await.unwrap()).await
}

pub async fn scrape(metrics: SocketAddr) -> String {
    let mut sender = http1_over(TcpStream::connect(metrics).await.unwrap()).await;
    let answer = send(&mut sender, "GET", "/metrics", empty()).await.unwrap();
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.content_type.starts_with("application/openmetrics-text"),
        "{}",
        answer.content_type
    );
    answer.body
}

/// Polls `check` until it returns `Some`, failing the test at the deadline.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(POLL).await;
    }
}
