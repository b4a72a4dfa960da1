//! The HTTPS call to a webhook, like kube-apiserver's webhook REST client: HTTP/1.1 only, TLS
//! verified against `caBundle` alone, one deadline for the whole call, and errors worded like
//! Go's `net/http` (`Post "<url>": ...`) so messages read as they do against a real cluster.
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{CertificateError, ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;

use super::webhook::ClientConfig as WebhookClientConfig;

/// Where and how to call one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    /// The URL as Go prints it in errors, `?timeout=` included.
    pub url: String,
    /// What to dial.
    pub dial: Dial,
    /// TLS server name verified against the certificate's SANs.
    pub server_name: String,
    /// `Host` header.
    pub authority: String,
    /// Request target (path and query).
    pub path_and_query: String,
}

/// Where a target's connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Dial {
    /// Host (name or IP) and port.
    Address(String, u16),
    /// Nothing to dial: the error a dial reports (an unmapped service, like one without endpoints).
    Unresolvable(String),
}

/// Why a target could not even be built (kube: "could not get REST client").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TargetError(pub String);

/// A service mapping lookup: `(namespace, name) -> base URL`.
pub(crate) type ServiceLookup<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

/// The failure of a call that reached the point of dialing (a Go `url.Error`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CallError(pub String);

/// A webhook's HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
}

fn split_host_port(uri: &Uri) -> Result<(String, u16), TargetError> {
    let host = uri
        .host()
        .ok_or_else(|| TargetError(format!("Unparsable URL: missing host in {uri}")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
    Ok((host, uri.port_u16().unwrap_or(443)))
}

/// Build the target of a webhook: `clientConfig.url` as is; `clientConfig.service` as
/// `https://<name>.<namespace>.svc:<port><path>` with TLS server name `<name>.<namespace>.svc`
/// (as kube does) but dialed at the address `map_service` gave for it. An unmapped service
/// fails at dial time, like a Service without endpoints.
pub(crate) fn target(
    client: &WebhookClientConfig,
    timeout: Duration,
    services: ServiceLookup<'_>,
) -> Result<Target, TargetError> {
    // The REST client rounds the deadline up to whole seconds for the `timeout` parameter.
    let query = format!("timeout={}s", timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0));
    if let Some(service) = &client.service {
        let port = service.port.unwrap_or(443);
        let server_name = format!("{}.{}.svc", service.name, service.namespace);
        let authority = format!("{server_name}:{port}");
        let path = service.path.clone().unwrap_or_default();
        let path = if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        let url = format!("https://{authority}{path}?{query}");
        let dial = match services(&service.namespace, &service.name) {
            Some(base) => {
                let uri: Uri = base
                    .parse()
                    .map_err(|e| TargetError(format!("Unparsable service mapping {base:?}: {e}")))?;
                let (host, port) = split_host_port(&uri)?;
                Dial::Address(host, port)
            }
            None => Dial::Unresolvable(format!("service {} not found", super::errors::quote(&service.name))),
        };
        return Ok(Target {
            url,
            dial,
            server_name,
            authority,
            path_and_query: format!("{path}?{query}"),
        });
    }
    let Some(url) = client.url.as_deref().filter(|u| !u.is_empty()) else {
        return Err(TargetError(
            "webhook configuration must have either service or URL".to_owned(),
        ));
    };
    let uri: Uri = url.parse().map_err(|e| TargetError(format!("Unparsable URL: {e}")))?;
    if uri.scheme_str() != Some("https") {
        return Err(TargetError(format!("Unparsable URL: scheme must be https in {url:?}")));
    }
    let (host, port) = split_host_port(&uri)?;
    let authority = uri.authority().map(ToString::to_string).unwrap_or_default();
    let path = match uri.path() {
        "" => "/",
        path => path,
    };
    Ok(Target {
        url: format!("https://{authority}{path}?{query}"),
        dial: Dial::Address(host.clone(), port),
        server_name: host,
        authority,
        path_and_query: format!("{path}?{query}"),
    })
}

/// Trust exactly the certificates of `caBundle` (base64 of PEM). No bundle trusts nothing:
/// kube would fall back to the system roots, which cannot contain a test CA.
pub(crate) fn roots(ca_bundle: Option<&str>) -> Result<RootCertStore, TargetError> {
    let mut roots = RootCertStore::empty();
    let Some(bundle) = ca_bundle.filter(|b| !b.is_empty()) else {
        return Ok(roots);
    };
    let pem = base64::engine::general_purpose::STANDARD
        .decode(bundle.trim())
        .map_err(|e| TargetError(format!("unable to load root certificates: caBundle is not base64: {e}")))?;
    let mut reader = pem.as_slice();
    let mut found = false;
    for cert in rustls_pemfile::certs(&mut reader) {
        let cert = cert.map_err(|e| TargetError(format!("unable to load root certificates: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| TargetError(format!("unable to load root certificates: {e}")))?;
        found = true;
    }
    if !found {
        return Err(TargetError(
            "unable to load root certificates: unable to parse bytes as PEM block".to_owned(),
        ));
    }
    Ok(roots)
}

/// Aborts the connection task when the call ends (answered, failed or timed out), so a
/// hanging webhook leaves nothing running.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Go's wording for the TLS failures a misconfigured caBundle or certificate produces.
fn tls_error(error: &std::io::Error) -> String {
    let rustls_error = error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>());
    let Some(rustls::Error::InvalidCertificate(cert)) = rustls_error else {
        return format!("remote error: tls: {error}");
    };
    let x509 = match cert {
        CertificateError::UnknownIssuer => "x509: certificate signed by unknown authority".to_owned(),
        CertificateError::NotValidForNameContext { expected, presented } => {
            let names: Vec<&str> = presented.iter().map(|name| bare_name(name)).collect();
            format!(
                "x509: certificate is valid for {}, not {}",
                names.join(", "),
                expected.to_str()
            )
        }
        CertificateError::Expired
        | CertificateError::ExpiredContext { .. }
        | CertificateError::NotValidYet
        | CertificateError::NotValidYetContext { .. } => "x509: certificate has expired or is not yet valid".to_owned(),
        other => format!("x509: {other}"),
    };
    format!("tls: failed to verify certificate: {x509}")
}

/// rustls reports presented names in Debug form (`IpAddress(127.0.0.1)`, `DnsName("x")`); Go
/// prints them bare.
fn bare_name(presented: &str) -> &str {
    presented
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .map_or(presented, |inner| inner.trim_matches('"'))
}

async fn dial(target: &Target) -> Result<TcpStream, String> {
    let (host, port) = match &target.dial {
        Dial::Address(host, port) => (host.as_str(), *port),
        Dial::Unresolvable(reason) => return Err(reason.clone()),
    };
    let addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("dial tcp: lookup {host}: {e}"))?;
    let mut last = format!("dial tcp: lookup {host}: no such host");
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last = format!("dial tcp {address}: connect: connection refused");
            }
            Err(e) => last = format!("dial tcp {address}: connect: {e}"),
        }
    }
    Err(last)
}

async fn exchange(target: &Target, roots: RootCertStore, body: Vec<u8>) -> Result<Reply, String> {
    let tcp = dial(target).await?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    // kube pins webhooks to HTTP/1.1 (kubernetes/kubernetes#75791).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name =
        ServerName::try_from(target.server_name.clone()).map_err(|e| format!("tls: invalid server name: {e}"))?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
        .map_err(|e| tls_error(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    let _connection = AbortOnDrop(tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "webhook connection ended");
        }
    }));
    let request = Request::post(target.path_and_query.as_str())
        .header(HOST, target.authority.as_str())
        .header(CONTENT_TYPE, "application/json")
        .header(ACCEPT, "application/json, */*")
        .header(USER_AGENT, "kube-apiserver-admission")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok(Reply {
        status,
        content_type,
        body: body.to_vec(),
    })
}

/// POST `body` to `target` within `timeout` (connect, TLS, request and response together).
pub(crate) async fn post(
    target: &Target,
    roots: RootCertStore,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<Reply, CallError> {
    match tokio::time::timeout(timeout, exchange(target, roots, body)).await {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(error)) => Err(CallError(format!("Post {:?}: {error}", target.url))),
        Err(_) => Err(CallError(format!("Post {:?}: context deadline exceeded", target.url))),
    }
}

/// A non-2xx answer as client-go's REST client words it: a `Status` body speaks for itself,
/// anything else gets `NewGenericServerResponse`'s generic sentence.
pub(crate) fn unexpected_status(reply: &Reply) -> String {
    if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&reply.body)
        && status.get("kind").and_then(serde_json::Value::as_str) == Some("Status")
        && let Some(message) = status.get("message").and_then(serde_json::Value::as_str)
    {
        return message.to_owned();
    }
    let text = reply
        .content_type
        .as_deref()
        .is_some_and(|t| t.starts_with("text/plain"));
    let server_message = if text {
        String::from_utf8_lossy(&reply.body).trim().to_owned()
    } else {
        "unknown".to_owned()
    };
    match reply.status {
        409 => "the server reported a conflict".to_owned(),
        404 => "the server could not find the requested resource".to_owned(),
        400 => "the server rejected our request for an unknown reason".to_owned(),
        401 => "the server has asked for the client to provide credentials".to_owned(),
        403 => server_message,
        405 => "the server does not allow this method on the requested resource".to_owned(),
        422 => "the server rejected our request due to an error in our request".to_owned(),
        504 => {
            "the server was unable to return a response in the time allotted, but may still be processing the request"
                .to_owned()
        }
        429 => "the server has received too many requests and has asked us to try again later".to_owned(),
        code if code >= 500 => format!(
            "an error on the server ({}) has prevented the request from succeeding",
            super::errors::quote(&server_message)
        ),
        code => format!("the server responded with the status code {code} but did not return more information"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::webhook::ServiceReference;

    #[test]
    fn service_targets_use_the_service_dns_name_and_the_mapped_address() {
        let client = WebhookClientConfig {
            url: None,
            service: Some(ServiceReference {
                namespace: "driftguard".into(),
                name: "driftguard".into(),
                path: Some("/validate".into()),
                port: None,
            }),
            ca_bundle: None,
        };
        let mapped = |ns: &str, name: &str| {
            (ns == "driftguard" && name == "driftguard").then(|| "https://127.0.0.1:8443".to_owned())
        };
        let target = target(&client, Duration::from_secs(3), &mapped).unwrap();
        assert_eq!(target.url, "https://driftguard.driftguard.svc:443/validate?timeout=3s");
        assert_eq!(target.server_name, "driftguard.driftguard.svc");
        assert_eq!(target.authority, "driftguard.driftguard.svc:443");
        assert_eq!(target.dial, Dial::Address("127.0.0.1".into(), 8443));
        let nothing = |_: &str, _: &str| None;
        let unmapped = super::target(&client, Duration::from_secs(3), &nothing).unwrap();
        assert_eq!(
            unmapped.dial,
            Dial::Unresolvable("service \"driftguard\" not found".into())
        );
    }

    #[test]
    fn url_targets_keep_host_and_default_port() {
        let client = WebhookClientConfig {
            url: Some("https://localhost/hook".into()),
            service: None,
            ca_bundle: None,
        };
        let nothing = |_: &str, _: &str| None;
        let target = target(&client, Duration::from_secs(10), &nothing).unwrap();
        assert_eq!(target.url, "https://localhost/hook?timeout=10s");
        assert_eq!(target.dial, Dial::Address("localhost".into(), 443));
        assert_eq!(target.server_name, "localhost");
        let plain = WebhookClientConfig {
            url: Some("http://localhost/hook".into()),
            ..client
        };
        assert!(super::target(&plain, Duration::from_secs(10), &nothing).is_err());
    }

    #[test]
    fn generic_messages_for_non_2xx() {
        let reply = |status, content_type: Option<&str>, body: &str| Reply {
            status,
            content_type: content_type.map(str::to_owned),
            body: body.as_bytes().to_vec(),
        };
        assert_eq!(
            unexpected_status(&reply(500, Some("application/json"), "{}")),
            "an error on the server (\"unknown\") has prevented the request from succeeding"
        );
        assert_eq!(
            unexpected_status(&reply(503, Some("text/plain"), "down\n")),
            "an error on the server (\"down\") has prevented the request from succeeding"
        );
        assert_eq!(
            unexpected_status(&reply(400, None, "")),
            "the server rejected our request for an unknown reason"
        );
        assert_eq!(
            unexpected_status(&reply(418, None, "")),
            "the server responded with the status code 418 but did not return more information"
        );
        assert_eq!(
            unexpected_status(&reply(
                500,
                Some("application/json"),
                r#"{"kind":"Status","message":"boom"}"#
            )),
            "boom"
        );
    }
}
