// Open a package from the bank: decrypt it with your private key, then verify the
// bank's signature and the claims iss, aud and exp.
//
// Needs: go get github.com/go-jose/go-jose/v4
// go-jose has no X25519 key agreement: send the bank a P-256 key. It verifies both
// ES256 and EdDSA signatures.
package partnerkit

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// OpenPackage returns the package's claims, or an error if it is not for you, not
// from the bank, or expired.
func OpenPackage(pkg string, privateJWK, bankJWKS []byte, issuer, audience string) (map[string]any, error) {
	var key jose.JSONWebKey
	if err := key.UnmarshalJSON(privateJWK); err != nil {
		return nil, err
	}
	envelope, err := jose.ParseEncrypted(pkg,
		[]jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
	if err != nil {
		return nil, err
	}
	if envelope.Header.ExtraHeaders["cty"] != "JWT" {
		return nil, errors.New("not a nested JWT (cty is not JWT)")
	}
	inner, err := envelope.Decrypt(key.Key)
	if err != nil {
		return nil, err
	}
	token, err := jwt.ParseSigned(string(inner), []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA})
	if err != nil {
		return nil, err
	}
	var bank jose.JSONWebKeySet
	if err := json.Unmarshal(bankJWKS, &bank); err != nil {
		return nil, err
	}
	keys := bank.Key(token.Headers[0].KeyID)
	if len(keys) == 0 {
		return nil, errors.New("the bank's key set has no key " + token.Headers[0].KeyID)
	}
	var registered jwt.Claims
	claims := map[string]any{}
	if err := token.Claims(keys[0].Key, &registered, &claims); err != nil {
		return nil, err
	}
	expected := jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: time.Now()}
	if err := registered.Validate(expected); err != nil {
		return nil, err
	}
	if registered.Expiry == nil {
		return nil, errors.New("no exp claim")
	}
	return claims, nil
}
