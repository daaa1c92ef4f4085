//! jsonwebtoken's cryptography for the one algorithm this service signs with, HS256 (RustCrypto's
//! `hmac` and `sha2`), installed as the process's provider. The crate's `rust_crypto` bundle
//! would also compile RSA, ECDSA and EdDSA code no token of ours can reach.

use hmac::{Hmac, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwtSigner, JwtVerifier, KeyUtils};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{Error as SignatureError, Signer, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind, EncodingKey};
use sha2::Sha256;

/// An HMAC-SHA256 key, signing and verifying.
struct Hs256(Hmac<Sha256>);

impl Hs256 {
    fn new(algorithm: &Algorithm, family: AlgorithmFamily, secret: &[u8]) -> Result<Self> {
        // Any other algorithm (a forged header says RS256, none, ...) is refused here too.
        if *algorithm != Algorithm::HS256 || family != AlgorithmFamily::Hmac {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        Hmac::new_from_slice(secret).map(Hs256).map_err(|_| ErrorKind::InvalidKeyFormat.into())
    }
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, message: &[u8]) -> std::result::Result<Vec<u8>, SignatureError> {
        let mut mac = self.0.clone();
        mac.update(message);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(
        &self,
        message: &[u8],
        signature: &Vec<u8>,
    ) -> std::result::Result<(), SignatureError> {
        let mut mac = self.0.clone();
        mac.update(message);
        // Constant-time comparison.
        mac.verify_slice(signature).map_err(SignatureError::from_source)
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>> {
    Ok(Box::new(Hs256::new(algorithm, key.family(), key.as_bytes())?))
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let DecodingKeyKind::SecretOrDer(secret) = key.kind() else {
        return Err(ErrorKind::InvalidKeyFormat.into());
    };
    Ok(Box::new(Hs256::new(algorithm, key.family(), secret)?))
}

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    key_utils: KeyUtils::new_unimplemented(),
};

/// Makes HS256 available to jsonwebtoken in this process. Idempotent; if the embedding
/// application installed a provider of its own first, that one (which has HS256 too) stays.
pub(crate) fn install() {
    let _ = PROVIDER.install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example token of RFC 7519's companion site jwt.io, signed with
    /// `your-256-bit-secret`: an independent check of the signature bytes.
    const HEADER_PAYLOAD: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ";
    const SIGNATURE: &str = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";

    #[test]
    fn signs_and_verifies_hs256_and_nothing_else() {
        install();
        let secret = b"your-256-bit-secret";
        let sign = |alg| {
            jsonwebtoken::crypto::sign(
                HEADER_PAYLOAD.as_bytes(),
                &EncodingKey::from_secret(secret),
                alg,
            )
        };
        assert_eq!(sign(Algorithm::HS256).unwrap(), SIGNATURE);
        assert!(sign(Algorithm::HS512).is_err());
        let verify = |sig, key: &[u8]| {
            jsonwebtoken::crypto::verify(
                sig,
                HEADER_PAYLOAD.as_bytes(),
                &DecodingKey::from_secret(key),
                Algorithm::HS256,
            )
        };
        assert!(verify(SIGNATURE, secret).unwrap());
        assert!(!verify(SIGNATURE, b"another secret").unwrap());
        assert!(!verify("AflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c", secret).unwrap());
    }
}
