//! Certificates for TLS tests: a certificate authority made for one test, the certificates it
//! signs, and the names in a server's certificate.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

impl TestCa {
    /// A new CA called `name`.
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("CA key: {e}"));
        let mut params =
            CertificateParams::new(Vec::<String>::new()).unwrap_or_else(|e| panic!("{e}"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let pem = params.self_signed(&key).unwrap_or_else(|e| panic!("CA: {e}")).pem();
        TestCa { issuer: Issuer::new(params, key), pem }
    }

    /// The CA's certificate (PEM), to trust.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `names` (host names or IP addresses) and its key, both PEM.
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap_or_else(|e| panic!("key: {e}"));
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).unwrap_or_else(|e| panic!("{e}"));
        let cert = params.signed_by(&key, &self.issuer).unwrap_or_else(|e| panic!("sign: {e}"));
        (cert.pem(), key.serialize_pem())
    }

    /// Writes the CA certificate and a server certificate for `names` into `dir`; returns the
    /// paths of the CA certificate, the server certificate and its key.
    pub fn write_files(&self, dir: &Path, names: &[&str]) -> (PathBuf, PathBuf, PathBuf) {
        let (cert, key) = self.issue(names);
        let paths = (dir.join("ca.pem"), dir.join("server.pem"), dir.join("server.key"));
        for (path, content) in [(&paths.0, self.pem.as_str()), (&paths.1, &cert), (&paths.2, &key)]
        {
            std::fs::write(path, content).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
        paths
    }
}

/// The DNS names (subject alternative names and common name) of the PEM certificate at `path`.
pub fn certificate_names(path: &Path) -> Vec<String> {
    let pem = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).unwrap_or_else(|e| panic!("{e}"));
    let cert = pem.parse_x509().unwrap_or_else(|e| panic!("{e}"));
    let mut names: Vec<String> = cert
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}
