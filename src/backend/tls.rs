//! TLS to Redis with trust roots the operator supplies (`RESTASH_REDIS_TLS_CA_FILE`),
//! for servers whose certificates are not signed by a public authority.

use std::path::Path;
use std::sync::Arc;

use fred::types::config::{TlsConfig, TlsConnector};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::BackendError;

/// A rustls connector that trusts exactly the CA certificates in the PEM file at `path`.
pub fn config_with_ca_file(path: &Path) -> Result<TlsConfig, BackendError> {
    let invalid = |reason: String| {
        BackendError::Config(format!(
            "RESTASH_REDIS_TLS_CA_FILE={}: {reason}",
            path.display()
        ))
    };
    let mut roots = rustls::RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path).map_err(|e| invalid(e.to_string()))?;
    for certificate in certificates {
        let certificate = certificate.map_err(|e| invalid(e.to_string()))?;
        roots.add(certificate).map_err(|e| invalid(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid("no certificate in the file".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConfig::from(TlsConnector::from(config)))
}
