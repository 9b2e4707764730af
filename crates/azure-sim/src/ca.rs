//! The throw-away certificate authority and the server certificate it signs.
//!
//! A real CA (rather than a self-signed leaf) mirrors production: clients keep certificate and
//! hostname verification on and merely trust one more root, exactly as a custom CA bundle for Azure
//! Stack or a TLS-inspecting proxy would be configured.

use crate::error::SimError;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::{net::IpAddr, sync::Arc};

/// A freshly generated CA and a server certificate for the given names.
pub struct TestPki {
    pub ca_pem: String,
    pub server_config: Arc<rustls::ServerConfig>,
}

/// Generates the CA and a leaf valid for `localhost`, `127.0.0.1`, `::1` and `extra_ip` (the bind
/// address, when it is not a loopback or wildcard address).
pub fn generate(extra_ip: Option<IpAddr>) -> Result<TestPki, SimError> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "azure-sim test CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "AppServiceLink tests");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Some(ip) = extra_ip {
        names.push(ip.to_string());
    }
    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(names)?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf_params.use_authority_key_identifier_extension = true;
    let leaf_cert = leaf_params.signed_by(&leaf_key, &issuer)?;

    // Pin the server to the ring provider so it works whatever default the host process installed.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server_config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![CertificateDer::from(leaf_cert.der().to_vec())],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )?;
    // Only HTTP/1.1 is served; advertising it keeps ALPN-negotiating clients from trying h2.
    server_config.alpn_protocols = vec![b"http/1.1".to_vec()];

    Ok(TestPki {
        ca_pem: ca_cert.pem(),
        server_config: Arc::new(server_config),
    })
}
