//! TLS to PostgreSQL, configured from the connection URL the way libpq reads it, for every
//! connection chatd opens (pool, listener, liveness lock, migrations, admin commands).
//!
//! - `sslmode`: `disable`, `prefer` (the default, as in libpq: TLS when the server offers it,
//!   unverified), `require` (TLS, unverified — or, as in libpq, `verify-ca` when an
//!   `sslrootcert` is given), `verify-ca` (the chain must lead to a trusted CA), `verify-full`
//!   (and the certificate must name the host).
//! - `sslrootcert`: a PEM file of trusted CA certificates, or `system` for the operating
//!   system's store (also what the verifying modes use without `sslrootcert`).
//! - `sslcert` + `sslkey`: a client certificate and its key (PEM).
//!
//! tokio-postgres knows only `disable`/`prefer`/`require` and none of the file parameters, so
//! [`split_url`] takes them off the URL and [`connector`] builds the rustls configuration.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(text: &str) -> anyhow::Result<SslMode> {
        Ok(match text {
            "disable" => SslMode::Disable,
            "prefer" | "allow" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            other => bail!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ),
        })
    }
}

/// The TLS parameters of a connection URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsOptions {
    pub mode: SslMode,
    /// A PEM file, or `system`.
    pub root_cert: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl TlsOptions {
    /// The mode in force: libpq verifies the chain under `require` when a root certificate
    /// is given.
    pub fn effective_mode(&self) -> SslMode {
        match (self.mode, &self.root_cert) {
            (SslMode::Require, Some(_)) => SslMode::VerifyCa,
            (mode, _) => mode,
        }
    }

    /// What tokio-postgres is told: whether to ask for TLS and whether it is required.
    pub fn postgres_mode(&self) -> tokio_postgres::config::SslMode {
        match self.mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            _ => tokio_postgres::config::SslMode::Require,
        }
    }

    fn set(&mut self, key: &str, value: &str) -> anyhow::Result<bool> {
        match key {
            "sslmode" => self.mode = SslMode::parse(value)?,
            "sslrootcert" => self.root_cert = Some(value.to_owned()),
            "sslcert" => self.cert = Some(PathBuf::from(value)),
            "sslkey" => self.key = Some(PathBuf::from(value)),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Splits the TLS parameters off a connection string: a URL (`postgres://…?sslmode=…`) or
/// libpq's `key=value` form. Returns the string without them, and them.
pub fn split_url(url: &str) -> anyhow::Result<(String, TlsOptions)> {
    let mut options = TlsOptions::default();
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), options));
        };
        let mut kept = url::form_urlencoded::Serializer::new(String::new());
        let mut any = false;
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            if !options.set(&key, &value)? {
                kept.append_pair(&key, &value);
                any = true;
            }
        }
        let kept = kept.finish();
        return Ok((
            if any {
                format!("{base}?{kept}")
            } else {
                base.to_owned()
            },
            options,
        ));
    }
    let mut kept = Vec::new();
    for pair in key_value_pairs(url)? {
        if !options.set(&pair.0, &pair.1)? {
            kept.push(format!(
                "{}='{}'",
                pair.0,
                pair.1.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), options))
}

/// libpq's `key=value key='quoted value'` form.
fn key_value_pairs(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        let key = key.trim().to_owned();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => bail!("unterminated quoted value of `{key}` in the connection string"),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c.is_whitespace() {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        pairs.push((key, value));
    }
}

/// The rustls connector for `options` (used for every mode, `disable` included: then
/// tokio-postgres never starts TLS).
pub fn connector(options: &TlsOptions) -> anyhow::Result<MakeRustlsConnect> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn ServerCertVerifier> = match options.effective_mode() {
        SslMode::Disable | SslMode::Prefer | SslMode::Require => {
            Arc::new(Unverified(provider.clone()))
        }
        mode @ (SslMode::VerifyCa | SslMode::VerifyFull) => {
            let roots = root_store(options.root_cert.as_deref())?;
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .context("build the certificate verifier")?;
            if mode == SslMode::VerifyFull {
                webpki
            } else {
                Arc::new(ChainOnly(webpki))
            }
        }
    };
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match (&options.cert, &options.key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("read sslcert {}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .with_context(|| format!("read sslkey {}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .context("the client certificate (sslcert, sslkey)")?
        }
        _ => bail!("sslcert and sslkey must be given together"),
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The CAs a verifying mode trusts: a PEM file, or the system's store.
fn root_store(root_cert: Option<&str>) -> anyhow::Result<RootCertStore> {
    let mut store = RootCertStore::empty();
    match root_cert {
        None | Some("system") => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                bail!("no CA certificates in the system store; set sslrootcert to a PEM file");
            }
        }
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .with_context(|| format!("read sslrootcert {path}"))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                bail!("sslrootcert {path}: no usable CA certificate in it");
            }
        }
    }
    Ok(store)
}

/// `prefer` and `require`: encrypted but unauthenticated, as in libpq (the handshake's
/// signatures are still checked).
#[derive(Debug)]
struct Unverified(Arc<CryptoProvider>);

impl ServerCertVerifier for Unverified {
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
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

/// `verify-ca`: the chain must lead to a trusted CA; the name in the certificate is not
/// checked.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_come_off_urls_and_key_value_strings() {
        let (rest, options) = split_url(
            "postgres://u:p@db:5432/chatd?sslmode=verify-full&application_name=x&sslrootcert=/ca.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/chatd?application_name=x");
        assert_eq!(options.mode, SslMode::VerifyFull);
        assert_eq!(options.root_cert.as_deref(), Some("/ca.pem"));
        let (rest, options) = split_url("postgres://db/chatd?sslmode=require").unwrap();
        assert_eq!(rest, "postgres://db/chatd");
        assert_eq!(options.effective_mode(), SslMode::Require);
        let (rest, options) =
            split_url("host=db dbname=chatd sslmode=require sslrootcert='/a b.pem'").unwrap();
        assert_eq!(rest, "host='db' dbname='chatd'");
        assert_eq!(
            options.effective_mode(),
            SslMode::VerifyCa,
            "libpq: require + root"
        );
        let (rest, options) = split_url("postgres://db/chatd").unwrap();
        assert_eq!(rest, "postgres://db/chatd");
        assert_eq!(options.mode, SslMode::Prefer);
        let error = split_url("postgres://db/chatd?sslmode=maybe").unwrap_err();
        assert!(error.to_string().contains("sslmode=maybe"), "{error}");
    }

    #[test]
    fn missing_files_are_named() {
        let options = TlsOptions {
            mode: SslMode::VerifyFull,
            root_cert: Some("/nonexistent/ca.pem".into()),
            ..TlsOptions::default()
        };
        let error = format!("{:#}", connector(&options).err().unwrap());
        assert!(error.contains("/nonexistent/ca.pem"), "{error}");
        let options = TlsOptions {
            cert: Some("/c.pem".into()),
            ..TlsOptions::default()
        };
        assert!(connector(&options).is_err());
    }
}
