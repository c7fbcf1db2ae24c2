package azemu

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"time"
)

// jwtHeader is the JOSE header of the tokens the emulators sign and accept.
type jwtHeader struct {
	Alg string   `json:"alg"`
	Typ string   `json:"typ,omitempty"`
	Kid string   `json:"kid,omitempty"`
	X5t string   `json:"x5t,omitempty"`
	X5c []string `json:"x5c,omitempty"`
}

var b64 = base64.RawURLEncoding

// signJWT returns the compact RS256 serialization of claims.
func signJWT(key *rsa.PrivateKey, hdr jwtHeader, claims any) (string, error) {
	hdr.Alg = "RS256"
	if hdr.Typ == "" {
		hdr.Typ = "JWT"
	}
	h, err := json.Marshal(hdr)
	if err != nil {
		return "", fmt.Errorf("encoding jwt header: %w", err)
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("encoding jwt claims: %w", err)
	}
	signingInput := b64.EncodeToString(h) + "." + b64.EncodeToString(c)
	sum := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		return "", fmt.Errorf("signing jwt: %w", err)
	}
	return signingInput + "." + b64.EncodeToString(sig), nil
}

// Reasons a token is refused; they end up in error messages, never with the token itself.
var (
	errMalformed    = errors.New("token is malformed")
	errBadSignature = errors.New("token signature is invalid")
	errExpired      = errors.New("token is expired")
	errNotYetValid  = errors.New("token is not valid yet")
)

// verifyJWT checks an RS256 token's signature against pub and decodes its claims into dst.
// It does not look at any claim; see checkTimes.
func verifyJWT(raw string, pub *rsa.PublicKey, dst any) error {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return errMalformed
	}
	hb, err := b64.DecodeString(parts[0])
	if err != nil {
		return errMalformed
	}
	var hdr jwtHeader
	if err := json.Unmarshal(hb, &hdr); err != nil {
		return errMalformed
	}
	if hdr.Alg != "RS256" {
		return fmt.Errorf("token algorithm %q is not accepted", hdr.Alg)
	}
	sig, err := b64.DecodeString(parts[2])
	if err != nil {
		return errMalformed
	}
	sum := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, sum[:], sig); err != nil {
		return errBadSignature
	}
	cb, err := b64.DecodeString(parts[1])
	if err != nil {
		return errMalformed
	}
	if err := json.Unmarshal(cb, dst); err != nil {
		return errMalformed
	}
	return nil
}

// clockSkew is the leeway Entra ID and ACR allow on exp and nbf.
const clockSkew = 5 * time.Minute

// checkTimes refuses a token outside its exp/nbf window (with clockSkew leeway).
func checkTimes(now time.Time, exp, nbf int64) error {
	if exp == 0 || now.After(time.Unix(exp, 0).Add(clockSkew)) {
		return errExpired
	}
	if nbf != 0 && now.Add(clockSkew).Before(time.Unix(nbf, 0)) {
		return errNotYetValid
	}
	return nil
}

// audience is a JWT "aud" claim: one string or a list of strings.
type audience []string

// MarshalJSON writes a single audience as a string, the way Entra ID and ACR do.
func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

// UnmarshalJSON accepts a string or a list of strings.
func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*a = many
	return nil
}

// jwkThumbprint is the RFC 7638 SHA-256 thumbprint of an RSA public key, the key id the
// distribution registry derives from each certificate of its token rootcertbundle.
func jwkThumbprint(pub *rsa.PublicKey) string {
	e := b64.EncodeToString(big.NewInt(int64(pub.E)).Bytes())
	n := b64.EncodeToString(pub.N.Bytes())
	sum := sha256.Sum256([]byte(fmt.Sprintf(`{"e":"%s","kty":"RSA","n":"%s"}`, e, n)))
	return b64.EncodeToString(sum[:])
}

// entraKeyID names the Entra signing key in JWT headers and the JWKS: 20 bytes of a digest of the
// public key, base64url, the same shape as Entra's kid/x5t (a SHA-1 certificate thumbprint).
func entraKeyID(pub *rsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(der)
	return b64.EncodeToString(sum[:20])
}
