//! [`SelfSigned`]: a certificate and key made at run time, with the acceptor that serves it and
//! a connector that trusts it alone; for tests, examples and development servers.

use std::{
    fmt, io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use openssl::{
    asn1::Asn1Time,
    bn::{BigNum, MsbOption},
    ec::{EcGroup, EcKey},
    hash::MessageDigest,
    nid::Nid,
    pkey::{PKey, Private},
    ssl::{SslAcceptor, SslConnector, SslMethod},
    x509::{
        X509, X509NameBuilder,
        extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName},
    },
};

use super::{acceptor::TlsAcceptor, connector::TlsConnector, layer};

/// A self-signed certificate and its private key, made at run time: for tests, examples and
/// development servers. Nobody trusts it but a client told to ([`connector`](Self::connector),
/// or the PEM file given to a client's `--cacert`).
pub struct SelfSigned {
    certificate: X509,
    private_key: PKey<Private>,
}

impl SelfSigned {
    /// A certificate for these names (DNS names or IP addresses), valid from yesterday for 30
    /// days, with a new P-256 key.
    pub fn new(names: &[&str]) -> io::Result<Self> {
        Self::make(names).map_err(io::Error::other)
    }

    fn make(names: &[&str]) -> Result<Self, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
        let private_key = PKey::from_ec_key(EcKey::generate(&group)?)?;
        let mut name = X509NameBuilder::new()?;
        name.append_entry_by_nid(
            Nid::COMMONNAME,
            names.first().copied().unwrap_or("localhost"),
        )?;
        name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "switchboard self-signed")?;
        let name = name.build();
        let mut builder = X509::builder()?;
        builder.set_version(2)?;
        let mut serial = BigNum::new()?;
        serial.rand(127, MsbOption::MAYBE_ZERO, false)?;
        let serial = serial.to_asn1_integer()?;
        builder.set_serial_number(&serial)?;
        builder.set_subject_name(&name)?;
        builder.set_issuer_name(&name)?;
        builder.set_pubkey(&private_key)?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_secs());
        let day = 24 * 60 * 60;
        let from = i64::try_from(now.saturating_sub(day)).unwrap_or(i64::MAX);
        let until = i64::try_from(now + 30 * day).unwrap_or(i64::MAX);
        let (from, until) = (Asn1Time::from_unix(from)?, Asn1Time::from_unix(until)?);
        builder.set_not_before(&from)?;
        builder.set_not_after(&until)?;
        // A CA of its own: verifiers (OpenSSL's strict mode, Python 3.13's default) accept a
        // self-signed certificate as a trust anchor only then.
        builder.append_extension(BasicConstraints::new().critical().ca().build()?)?;
        builder.append_extension(
            KeyUsage::new()
                .critical()
                .digital_signature()
                .key_cert_sign()
                .build()?,
        )?;
        builder.append_extension(
            ExtendedKeyUsage::new()
                .server_auth()
                .client_auth()
                .build()?,
        )?;
        let mut alt_names = SubjectAlternativeName::new();
        for name in names {
            match name.parse::<IpAddr>() {
                Ok(_) => alt_names.ip(name),
                Err(_) => alt_names.dns(name),
            };
        }
        if !names.is_empty() {
            let alt_names = alt_names.build(&builder.x509v3_context(None, None))?;
            builder.append_extension(alt_names)?;
        }
        builder.sign(&private_key, MessageDigest::sha256())?;
        Ok(SelfSigned {
            certificate: builder.build(),
            private_key,
        })
    }

    /// A certificate for `localhost`, `127.0.0.1` and `::1`.
    pub fn localhost() -> io::Result<Self> {
        let v4 = Ipv4Addr::LOCALHOST.to_string();
        let v6 = Ipv6Addr::LOCALHOST.to_string();
        SelfSigned::new(&["localhost", &v4, &v6])
    }

    /// The certificate.
    pub fn certificate(&self) -> &X509 {
        &self.certificate
    }

    /// The private key.
    pub fn private_key(&self) -> &PKey<Private> {
        &self.private_key
    }

    /// The certificate in PEM form.
    pub fn certificate_pem(&self) -> io::Result<Vec<u8>> {
        self.certificate.to_pem().map_err(io::Error::other)
    }

    /// The private key in PEM form (PKCS#8).
    pub fn private_key_pem(&self) -> io::Result<Vec<u8>> {
        self.private_key
            .private_key_to_pem_pkcs8()
            .map_err(io::Error::other)
    }

    /// A server acceptor (Mozilla "intermediate") serving this certificate.
    pub fn acceptor(&self) -> io::Result<TlsAcceptor> {
        let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
            .map_err(io::Error::other)?;
        builder
            .set_certificate(&self.certificate)
            .and_then(|()| builder.set_private_key(&self.private_key))
            .and_then(|()| builder.check_private_key())
            .map_err(io::Error::other)?;
        Ok(TlsAcceptor::new(builder.build()))
    }

    /// A client connector that trusts this certificate and no other, and verifies host names.
    pub fn connector(&self) -> io::Result<TlsConnector> {
        let mut builder =
            SslConnector::builder(SslMethod::tls_client()).map_err(io::Error::other)?;
        let mut store = openssl::x509::store::X509StoreBuilder::new().map_err(io::Error::other)?;
        store
            .add_cert(self.certificate.clone())
            .map_err(io::Error::other)?;
        builder
            .set_verify_cert_store(store.build())
            .map_err(io::Error::other)?;
        Ok(TlsConnector::from_connector(builder.build()))
    }
}

impl fmt::Debug for SelfSigned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SelfSigned")
            .field("subject", &layer::certificate(&self.certificate).subject)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificates_name_what_they_were_made_for() {
        let cert = SelfSigned::new(&["localhost", "127.0.0.1"]).unwrap();
        let described = layer::certificate(cert.certificate());
        assert_eq!(described.subject, "CN=localhost,O=switchboard self-signed");
        assert_eq!(described.issuer, described.subject);
        assert_eq!(described.subject_alt_names, ["localhost", "127.0.0.1"]);
        assert!(
            String::from_utf8(cert.private_key_pem().unwrap())
                .unwrap()
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }
}
