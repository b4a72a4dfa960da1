//! The server's own CA and serving certificate, generated at start (never written to disk
//! except into the kubeconfig a test asks for), and the rustls configuration: TLS 1.2/1.3,
//! ALPN `h2` then `http/1.1` (kubectl speaks HTTP/2).
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ServerError;

/// The generated CA and the rustls configuration serving a certificate it signed.
pub(super) struct Tls {
    /// The CA certificate (PEM) clients trust.
    pub(super) ca_pem: String,
    /// The server configuration.
    pub(super) config: Arc<rustls::ServerConfig>,
}

fn generate(what: &'static str) -> impl Fn(rcgen::Error) -> ServerError {
    move |source| ServerError::Certificate { what, source }
}

/// A fresh CA and a serving certificate for `127.0.0.1` and `localhost`.
pub(super) fn generate_tls() -> Result<Tls, ServerError> {
    let ca_key = KeyPair::generate().map_err(generate("CA key"))?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "driftguard-testapi-ca");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(generate("CA certificate"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(generate("serving key"))?;
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .map_err(generate("serving names"))?;
    params.distinguished_name.push(DnType::CommonName, "kube-apiserver");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(generate("serving certificate"))?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ServerError::Tls)?
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone(), ca_cert.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .map_err(ServerError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Tls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}
