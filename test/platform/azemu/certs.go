package azemu

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// Files PrepareCerts writes into its directory.
const (
	FileCA                 = "ca.pem"                 // CA certificate: trust it to reach both emulators
	FileCAKey              = "ca-key.pem"             // CA private key
	FileCABundle           = "ca-bundle.pem"          // the system roots plus FileCA, for SSL_CERT_FILE
	FileTLSCert            = "tls.pem"                // server certificate for 127.0.0.1, ::1 and localhost
	FileTLSKey             = "tls-key.pem"            // its private key
	FileRegistryTokenCert  = "registry-token.pem"     // the registry's auth.token.rootcertbundle
	FileRegistryTokenKey   = "registry-token-key.pem" // signs registry access tokens
	FileEntraKey           = "entra-key.pem"          // signs Entra ID access tokens
	FileACRRefreshTokenKey = "acr-refresh-key.pem"    // signs ACR refresh tokens
)

// RegistryIssuer is the iss claim of ACR access tokens, and the issuer the registry must trust.
const RegistryIssuer = "Azure Container Registry"

// renewBefore makes PrepareCerts replace a certificate that expires within this window.
const renewBefore = 7 * 24 * time.Hour

// systemBundles are where Debian, Fedora and Alpine keep the system trust store.
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/cert.pem",
}

// PrepareCerts writes into dir the CA, the server certificate for the emulators, the registry token
// signing certificate and key, the Entra ID signing key and the ACR refresh token signing key.
// It is idempotent: files that exist and are still valid are kept, so tokens and trust survive
// restarts; a certificate that no longer matches its CA or key, or expires within a week, is replaced.
func PrepareCerts(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating cert dir: %w", err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }

	ca, caKey, err := ensureCA(p(FileCA), p(FileCAKey))
	if err != nil {
		return err
	}
	if err := ensureServerCert(p(FileTLSCert), p(FileTLSKey), ca, caKey); err != nil {
		return err
	}
	if err := ensureCABundle(p(FileCABundle), p(FileCA)); err != nil {
		return err
	}
	if err := ensureSigningCert(p(FileRegistryTokenCert), p(FileRegistryTokenKey)); err != nil {
		return err
	}
	for _, name := range []string{FileEntraKey, FileACRRefreshTokenKey} {
		if _, _, err := loadOrCreateRSAKey(p(name)); err != nil {
			return err
		}
	}
	return nil
}

// RegistryTokenAuth returns the values of the distribution registry's `auth: token:` configuration that
// make it trust the access tokens the ACR front on loginServer (host:port) issues.
func RegistryTokenAuth(dir, loginServer string) (realm, service, issuer, rootCertBundle string) {
	return "https://" + loginServer + "/oauth2/token", loginServer, RegistryIssuer, filepath.Join(dir, FileRegistryTokenCert)
}

func ensureCA(certPath, keyPath string) (*x509.Certificate, crypto.Signer, error) {
	cert, certErr := readCert(certPath)
	key, keyErr := readKey(keyPath)
	if certErr == nil && keyErr == nil && cert.IsCA && publicKeysEqual(cert.PublicKey, key.Public()) && fresh(cert) {
		return cert, key, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generating CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "mlplugins local platform CA", Organization: []string{"mlplugins"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	if err := writeKey(keyPath, key); err != nil {
		return nil, nil, err
	}
	if err := writeCert(certPath, der); err != nil {
		return nil, nil, err
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing CA certificate: %w", err)
	}
	return cert, key, nil
}

func ensureServerCert(certPath, keyPath string, ca *x509.Certificate, caKey crypto.Signer) error {
	cert, certErr := readCert(certPath)
	key, keyErr := readKey(keyPath)
	if certErr == nil && keyErr == nil && publicKeysEqual(cert.PublicKey, key.Public()) && fresh(cert) {
		roots := x509.NewCertPool()
		roots.AddCert(ca)
		_, errName := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "localhost"})
		_, errIP := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "127.0.0.1"})
		if errName == nil && errIP == nil {
			return nil
		}
	}
	newKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating server key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "localhost", Organization: []string{"mlplugins"}},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().AddDate(2, 0, 0),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, newKey.Public(), caKey)
	if err != nil {
		return fmt.Errorf("creating server certificate: %w", err)
	}
	if err := writeKey(keyPath, newKey); err != nil {
		return err
	}
	return writeCert(certPath, der)
}

// ensureSigningCert keeps (or creates) an RSA signing key and a self-signed certificate for it:
// the distribution registry trusts the tokens whose x5c chain ends at, or whose kid is the JWK
// thumbprint of, a certificate in its rootcertbundle.
func ensureSigningCert(certPath, keyPath string) error {
	key, _, err := loadOrCreateRSAKey(keyPath)
	if err != nil {
		return err
	}
	if cert, err := readCert(certPath); err == nil && publicKeysEqual(cert.PublicKey, key.Public()) && fresh(cert) {
		return nil
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ACR token signing", Organization: []string{"mlplugins"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return fmt.Errorf("creating token signing certificate: %w", err)
	}
	return writeCert(certPath, der)
}

// ensureCABundle writes the system trust store followed by the platform CA, so that a process given
// SSL_CERT_FILE=bundle trusts the emulators without losing the public roots.
func ensureCABundle(bundlePath, caPath string) error {
	caPEM, err := os.ReadFile(caPath)
	if err != nil {
		return fmt.Errorf("reading CA certificate: %w", err)
	}
	var buf bytes.Buffer
	for _, sys := range systemBundles {
		if b, err := os.ReadFile(sys); err == nil {
			buf.Write(b)
			if !bytes.HasSuffix(b, []byte("\n")) {
				buf.WriteByte('\n')
			}
			break
		}
	}
	buf.Write(caPEM)
	if old, err := os.ReadFile(bundlePath); err == nil && bytes.Equal(old, buf.Bytes()) {
		return nil
	}
	return writeFileAtomic(bundlePath, buf.Bytes(), 0o644)
}

func loadOrCreateRSAKey(path string) (*rsa.PrivateKey, bool, error) {
	if k, err := readKey(path); err == nil {
		if rk, ok := k.(*rsa.PrivateKey); ok {
			return rk, false, nil
		}
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, false, fmt.Errorf("generating RSA key: %w", err)
	}
	if err := writeKey(path, k); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

func readRSAKey(path string) (*rsa.PrivateKey, error) {
	k, err := readKey(path)
	if err != nil {
		return nil, err
	}
	rk, ok := k.(*rsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("key in %s is not an RSA key", path)
	}
	return rk, nil
}

func readCert(path string) (*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("no certificate in %s", path)
	}
	return x509.ParseCertificate(block.Bytes)
}

func readKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("no PEM data in %s", path)
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing key in %s: %w", path, err)
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported key type in %s", path)
		}
		return s, nil
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("unsupported PEM block %q in %s", block.Type, path)
}

func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding key: %w", err)
	}
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

func writeCert(path string, der []byte) error {
	return writeFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// writeFileAtomic replaces path in one rename, so that a reader never sees half a key.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	_, werr := tmp.Write(data)
	cerr := tmp.Close()
	if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), mode)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func fresh(c *x509.Certificate) bool {
	now := time.Now()
	return now.After(c.NotBefore) && now.Add(renewBefore).Before(c.NotAfter)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	ea, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && ea.Equal(b)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		return big.NewInt(time.Now().UnixNano())
	}
	return n
}
