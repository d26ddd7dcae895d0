// Sign a status report for the bank (Standard Webhooks): the standard library alone.
//
// v1: HMAC-SHA256 with the whsec_ secret the bank gave you.
// v1a: Ed25519 with your key, whose public half is in the key set the bank holds.
package partnerkit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"strings"
)

func content(msgID string, timestamp int64, body []byte) []byte {
	return append([]byte(fmt.Sprintf("%s.%d.", msgID, timestamp)), body...)
}

// SignV1 gives "v1,<base64 HMAC-SHA256>" over "{id}.{timestamp}.{body}".
func SignV1(secret, msgID string, timestamp int64, body []byte) (string, error) {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return "", err
	}
	mac := hmac.New(sha256.New, key)
	mac.Write(content(msgID, timestamp, body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil)), nil
}

// SignV1a gives "v1a,<base64 Ed25519>"; seed is the private JWK's "d" member, decoded.
func SignV1a(seed []byte, msgID string, timestamp int64, body []byte) string {
	signature := ed25519.Sign(ed25519.NewKeyFromSeed(seed), content(msgID, timestamp, body))
	return "v1a," + base64.StdEncoding.EncodeToString(signature)
}

// Send posts one signed report; msgID is unique per event, and a retry reuses it.
func Send(url, msgID string, timestamp int64, signature string, body []byte) (*http.Response, error) {
	request, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	request.Header.Set("Content-Type", "application/json")
	request.Header.Set("webhook-id", msgID)
	request.Header.Set("webhook-timestamp", fmt.Sprint(timestamp))
	request.Header.Set("webhook-signature", signature)
	return http.DefaultClient.Do(request)
}
