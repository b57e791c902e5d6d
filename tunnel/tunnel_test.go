package tunnel

import (
	"bytes"
	"encoding/binary"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/require"

	"github.com/perceptron-cloud/perceptron/fault"
)

func TestValidateSubdomain(t *testing.T) {
	for _, ok := range []string{"ab", "myapp", "a-b", "a1", "00", "x" + strings.Repeat("y", 31), "my--app"} {
		require.NoError(t, ValidateSubdomain(ok), ok)
	}
	for s, msg := range map[string]string{
		"":                      MsgSubdomainMissing,
		"a":                     MsgTooShort,
		strings.Repeat("a", 33): MsgTooLong,
		"-ab":                   MsgBadChars,
		"ab-":                   MsgBadChars,
		"aB":                    MsgBadChars,
		"a_b":                   MsgBadChars,
		"a.b":                   MsgBadChars,
		"ä1":                    MsgBadChars,
		"www":                   "www is a reserved subdomain",
		"ns1":                   "ns1 is a reserved subdomain",
	} {
		err := ValidateSubdomain(s)
		require.Equal(t, fault.Invalid, fault.CodeOf(err), s)
		require.Equal(t, msg, fault.MessageOf(err), s)
	}
	for _, w := range ReservedWords {
		require.Error(t, ValidateSubdomain(w), w)
	}
	require.Len(t, ReservedWords, 16)
}

func TestSigner(t *testing.T) {
	now := time.Unix(1_748_000_000, 0)
	clock := func() time.Time { return now }
	key := bytes.Repeat([]byte("k"), 32)
	s, err := NewSigner(key, 0, clock)
	require.NoError(t, err)
	d := Domain{ID: "d1", Account: "0xabc", Subdomain: "myapp", LocalPort: 10001, PortVersion: 3}
	tok, exp, err := s.Issue(d)
	require.NoError(t, err)
	require.Equal(t, now.Add(5*time.Minute), exp)
	c, err := s.Parse(tok)
	require.NoError(t, err)
	require.Equal(t, "d1", c.DomainID)
	require.Equal(t, "myapp", c.Subdomain)
	require.Equal(t, uint16(10001), c.Port)
	require.Equal(t, "0xabc", c.Wallet)
	require.Equal(t, int64(3), c.PortVersion)

	other, err := NewSigner(bytes.Repeat([]byte("o"), 32), 0, clock)
	require.NoError(t, err)
	_, err = other.Parse(tok)
	require.Equal(t, fault.Unauthenticated, fault.CodeOf(err), "another key")

	// Other algorithms, audiences, issuers and missing claims.
	sign := func(m jwt.SigningMethod, k any, c jwt.Claims) string {
		str, err := jwt.NewWithClaims(m, c).SignedString(k)
		require.NoError(t, err)
		return str
	}
	good := Claims{DomainID: "d1", Subdomain: "myapp", Port: 10001, Wallet: "0xabc",
		RegisteredClaims: jwt.RegisteredClaims{Issuer: tokenIssuer, Audience: jwt.ClaimStrings{tokenAudience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(time.Minute))}}
	_, err = s.Parse(sign(jwt.SigningMethodHS256, key, good))
	require.NoError(t, err)
	none := sign(jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good)
	_, err = s.Parse(none)
	require.Error(t, err, "alg none")
	_, err = s.Parse(sign(jwt.SigningMethodHS512, key, good))
	require.Error(t, err, "another algorithm")
	bad := good
	bad.Audience = jwt.ClaimStrings{"other"}
	_, err = s.Parse(sign(jwt.SigningMethodHS256, key, bad))
	require.Error(t, err, "audience")
	bad = good
	bad.Issuer = "someone"
	_, err = s.Parse(sign(jwt.SigningMethodHS256, key, bad))
	require.Error(t, err, "issuer")
	bad = good
	bad.ExpiresAt = nil
	_, err = s.Parse(sign(jwt.SigningMethodHS256, key, bad))
	require.Error(t, err, "no expiry")
	bad = good
	bad.Port = 0
	_, err = s.Parse(sign(jwt.SigningMethodHS256, key, bad))
	require.Error(t, err, "no port")

	now = now.Add(5*time.Minute + 6*time.Second)
	_, err = s.Parse(tok)
	require.Error(t, err, "expired")

	_, err = NewSigner([]byte("short"), 0, nil)
	require.Error(t, err)
}

func TestSubdomainOf(t *testing.T) {
	s := &Service{base: "pct.site"}
	for host, want := range map[string]string{
		"myapp.pct.site":       "myapp",
		"MyApp.PCT.site":       "myapp",
		"myapp.pct.site:8443":  "myapp",
		"myapp.pct.site.":      "myapp",
		"[::1]":                "",
		"pct.site":             "",
		"a.b.pct.site":         "",
		"www.pct.site":         "",
		"myapp.pct.site.evil":  "",
		"myapp.notpct.site":    "",
		"x.pct.site":           "",
		"my_app.pct.site:8081": "",
	} {
		got, ok := s.subdomainOf(host)
		require.Equal(t, want != "", ok, host)
		require.Equal(t, want, got, host)
	}
}

// recorder records each write as one message.
type recorder struct {
	net.Conn
	msgs [][]byte
}

func (r *recorder) Write(p []byte) (int, error) {
	r.msgs = append(r.msgs, append([]byte(nil), p...))
	return len(p), nil
}

// A data frame's header and body become one write; other frames pass.
func TestCoalescer(t *testing.T) {
	rec := &recorder{}
	c := NewCoalescer(rec, &FrameBuffers{})
	hdr := func(typ byte, length uint32) []byte {
		h := make([]byte, 12)
		h[1] = typ
		binary.BigEndian.PutUint32(h[8:], length)
		return h
	}
	_, _ = c.Write(hdr(0, 5))
	_, _ = c.Write([]byte("hello"))
	_, _ = c.Write(hdr(1, 1024)) // a window update: no body
	_, _ = c.Write(hdr(0, 0))    // a data frame without a body (FIN)
	_, _ = c.Write(hdr(0, 3))
	_, _ = c.Write([]byte("abc"))
	require.Len(t, rec.msgs, 4)
	require.Equal(t, append(hdr(0, 5), "hello"...), rec.msgs[0])
	require.Equal(t, hdr(1, 1024), rec.msgs[1])
	require.Equal(t, hdr(0, 0), rec.msgs[2])
	require.Equal(t, append(hdr(0, 3), "abc"...), rec.msgs[3])
}
