package azemu

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
)

var allFiles = []string{FileCA, FileCAKey, FileCABundle, FileTLSCert, FileTLSKey, FileRegistryTokenCert, FileRegistryTokenKey, FileEntraKey, FileACRRefreshTokenKey}

func readAll(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	m := map[string][]byte{}
	for _, f := range allFiles {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatalf("reading %s: %v", f, err)
		}
		m[f] = b
	}
	return m
}

func verifyServerCert(t *testing.T, dir string) {
	t.Helper()
	pool, err := CAPool(dir)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := readCert(filepath.Join(dir, FileTLSCert))
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		if _, err := cert.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("server certificate for %s: %v", host, err)
		}
	}
	key, err := readKey(filepath.Join(dir, FileTLSKey))
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		t.Error("server certificate does not match its key")
	}
}

func TestPrepareCertsWritesEveryFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "certs")
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	files := readAll(t, dir)
	for _, f := range []string{FileCAKey, FileTLSKey, FileRegistryTokenKey, FileEntraKey, FileACRRefreshTokenKey} {
		st, err := os.Stat(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s mode = %v, want 0600", f, st.Mode().Perm())
		}
	}
	verifyServerCert(t, dir)
	tokCert, err := readCert(filepath.Join(dir, FileRegistryTokenCert))
	if err != nil {
		t.Fatal(err)
	}
	tokKey := mustRSA(t, filepath.Join(dir, FileRegistryTokenKey))
	if !publicKeysEqual(tokCert.PublicKey, tokKey.Public()) {
		t.Error("registry token certificate does not match its key")
	}
	if !bytes.HasSuffix(files[FileCABundle], files[FileCA]) {
		t.Error("ca-bundle.pem does not end with the platform CA")
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(files[FileCABundle]) {
		t.Error("ca-bundle.pem holds no certificate")
	}
}

func TestPrepareCertsIsIdempotent(t *testing.T) {
	dir := t.TempDir()
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, dir)
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	after := readAll(t, dir)
	for _, f := range allFiles {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed on the second run", f)
		}
	}
}

func TestPrepareCertsRepairs(t *testing.T) {
	dir := t.TempDir()
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	before := readAll(t, dir)

	// A lost server certificate is reissued by the same CA; the other files are kept.
	if err := os.Remove(filepath.Join(dir, FileTLSCert)); err != nil {
		t.Fatal(err)
	}
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	after := readAll(t, dir)
	for _, f := range []string{FileCA, FileCAKey, FileRegistryTokenCert, FileRegistryTokenKey, FileEntraKey, FileACRRefreshTokenKey} {
		if !bytes.Equal(before[f], after[f]) {
			t.Errorf("%s changed when only tls.pem was missing", f)
		}
	}
	verifyServerCert(t, dir)

	// A new CA forces a new server certificate signed by it.
	for _, f := range []string{FileCA, FileCAKey} {
		if err := os.Remove(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	verifyServerCert(t, dir)
	again := readAll(t, dir)
	if bytes.Equal(after[FileCA], again[FileCA]) {
		t.Error("CA was not regenerated")
	}
	if !bytes.HasSuffix(again[FileCABundle], again[FileCA]) {
		t.Error("ca-bundle.pem was not refreshed with the new CA")
	}

	// A registry token certificate that lost its key gets a new pair.
	if err := os.Remove(filepath.Join(dir, FileRegistryTokenKey)); err != nil {
		t.Fatal(err)
	}
	if err := PrepareCerts(dir); err != nil {
		t.Fatal(err)
	}
	tokCert, err := readCert(filepath.Join(dir, FileRegistryTokenCert))
	if err != nil {
		t.Fatal(err)
	}
	if !publicKeysEqual(tokCert.PublicKey, mustRSA(t, filepath.Join(dir, FileRegistryTokenKey)).Public()) {
		t.Error("registry token certificate does not match the new key")
	}
}

func TestRegistryTokenAuth(t *testing.T) {
	realm, service, issuer, bundle := RegistryTokenAuth("/p/certs", "127.0.0.1:5443")
	if realm != "https://127.0.0.1:5443/oauth2/token" || service != "127.0.0.1:5443" || issuer != "Azure Container Registry" || bundle != "/p/certs/registry-token.pem" {
		t.Errorf("RegistryTokenAuth = %q %q %q %q", realm, service, issuer, bundle)
	}
}

func mustRSA(t *testing.T, path string) *rsa.PrivateKey {
	t.Helper()
	k, err := readRSAKey(path)
	if err != nil {
		t.Fatal(err)
	}
	return k
}
