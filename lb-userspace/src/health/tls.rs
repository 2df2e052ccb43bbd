//! The https check's TLS (rustls with ring): a client that verifies the
//! server's certificate against the system's trust store or a CA file, or
//! accepts any certificate, and failures told as an operator reads them.

use std::{io, net::IpAddr, sync::Arc};

use rustls_pki_types::{pem::PemObject, CertificateDer, ServerName, UnixTime};
use tokio_rustls::{
    rustls::{
        self,
        client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
        crypto::{self, CryptoProvider},
        CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    },
    TlsConnector,
};

use crate::model::TlsCheck;

/// Where the system's trusted certificates are (Debian's ca-certificates),
/// which rustls-native-certs reads unless SSL_CERT_FILE or SSL_CERT_DIR says
/// otherwise.
const SYSTEM_STORE: &str = "/etc/ssl/certs";

/// The client an https check connects with, made once per check: the
/// trust store is read when the check starts (or restarts on a reload).
pub fn connector(tls: &TlsCheck) -> Result<TlsConnector, String> {
    // ring builds with a C compiler alone; rustls deprecates it for lacking
    // post-quantum key exchange, which a health probe does not need.
    #[allow(deprecated)]
    let provider = Arc::new(crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let config = if tls.verify {
        builder.with_root_certificates(trusted(tls)?)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    }
    .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// The certificates a verified server's chain must end in.
fn trusted(tls: &TlsCheck) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(format!(
                    "ca_file {}: no usable certificate in it",
                    path.display()
                ));
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map_or_else(String::new, |e| format!(": {e}"));
                return Err(format!(
                    "no trusted certificates in the system store ({SYSTEM_STORE}){why}; set \
                     ca_file or verify = false"
                ));
            }
        }
    }
    Ok(roots)
}

/// The name sent and verified: the SNI name, else the probed address
/// (sent as no SNI, and matched against the certificate's IP names).
pub fn server_name(tls: &TlsCheck, target: IpAddr) -> ServerName<'static> {
    tls.sni
        .as_deref()
        .and_then(|name| ServerName::try_from(name.to_owned()).ok())
        .unwrap_or(ServerName::IpAddress(target.into()))
}

/// Why a handshake failed: "certificate not trusted: ...", "TLS handshake: ...".
pub fn handshake_failure(error: &io::Error, describe: impl Fn(&io::Error) -> String) -> String {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(problem)) => certificate_problem(problem),
        Some(rustls::Error::AlertReceived(alert)) => {
            format!("TLS handshake: the server sent alert {alert:?}")
        }
        Some(other) => format!("TLS handshake: {other}"),
        None => format!("TLS handshake: {}", describe(error)),
    }
}

fn certificate_problem(problem: &CertificateError) -> String {
    let problem = match problem {
        CertificateError::UnknownIssuer => "unknown issuer (not signed by a trusted CA)".into(),
        CertificateError::BadSignature => "bad signature".into(),
        CertificateError::NotValidForName => "not valid for the name".into(),
        CertificateError::Expired => "expired".into(),
        CertificateError::NotValidYet => "not valid yet".into(),
        // The ones with context say it all.
        other => other.to_string(),
    };
    format!("certificate not trusted: {problem}")
}

/// `verify = false`: any certificate is accepted; the handshake's
/// signatures are still checked (the server holds the key it presents).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
