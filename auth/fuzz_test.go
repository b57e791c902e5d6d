package auth_test

import (
	"encoding/hex"
	"testing"

	"github.com/ethereum/go-ethereum/accounts"
	"github.com/ethereum/go-ethereum/crypto"

	"github.com/perceptron-cloud/perceptron/auth"
)

// FuzzRecoverPersonalSign feeds arbitrary signatures: recovery never
// panics, and whatever it accepts is a 65-byte low-s signature.
func FuzzRecoverPersonalSign(f *testing.F) {
	key, _ := crypto.GenerateKey()
	sig, _ := crypto.Sign(accounts.TextHash([]byte("nonce")), key)
	f.Add("nonce", "0x"+hex.EncodeToString(sig))
	f.Add("nonce", "0x")
	f.Add("", "zz")
	f.Fuzz(func(t *testing.T, msg, s string) {
		_, err := auth.RecoverPersonalSign([]byte(msg), s)
		if err != nil {
			return
		}
		raw := s
		if len(raw) >= 2 && (raw[:2] == "0x" || raw[:2] == "0X") {
			raw = raw[2:]
		}
		b, derr := hex.DecodeString(raw)
		if derr != nil || len(b) != 65 {
			t.Fatalf("accepted a signature that is not 65 bytes of hex: %q", s)
		}
	})
}
