package tunnel

import (
	"crypto/rand"
	"errors"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	"github.com/perceptron-cloud/perceptron/fault"
)

// Claims are what a tunnel token asserts: the domain, its subdomain and
// port, the wallet that owns it, the port version the token was issued
// for and the key that fetched it, plus the registered claims (issuer,
// audience, issue and expiry times, a unique ID).
type Claims struct {
	DomainID    string `json:"did"`
	Subdomain   string `json:"sub_domain"`
	Port        uint16 `json:"port"`
	Wallet      string `json:"wallet"`
	PortVersion int64  `json:"pv"`
	// Credential names the API key that fetched the token
	// (auth.Principal.Credential); the tunnel it connects is closed when
	// that key is revoked. Empty for a token issued without one.
	Credential string `json:"cred,omitempty"`
	jwt.RegisteredClaims
}

// Token issuer and audience.
const (
	tokenIssuer   = "perceptron"
	tokenAudience = "perceptron-tunnel"
)

// Signer issues and checks tunnel tokens: HS256 JWTs (github.com/golang-jwt/jwt/v5)
// signed with an operator key. Every process that accepts tunnels must
// share the key.
type Signer struct {
	key []byte
	ttl time.Duration
	now func() time.Time
}

// NewSigner returns a signer with key (at least 32 bytes; nil means a
// random key of this process, which tokens from another process, or from
// before a restart, do not pass), tokens valid for ttl (0 means
// DefaultTokenTTL), on clock now (nil means time.Now).
func NewSigner(key []byte, ttl time.Duration, now func() time.Time) (*Signer, error) {
	if key == nil {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
	}
	if len(key) < 32 {
		return nil, errors.New("tunnel: the token key must be at least 32 bytes")
	}
	if ttl <= 0 {
		ttl = DefaultTokenTTL
	}
	if now == nil {
		now = time.Now
	}
	return &Signer{key: append([]byte(nil), key...), ttl: ttl, now: now}, nil
}

// Issue signs a token for d, which must have a port.
func (s *Signer) Issue(d Domain) (string, time.Time, error) { return s.IssueFor(d, "") }

// IssueFor signs a token for d, which must have a port, fetched with the
// key named credential.
func (s *Signer) IssueFor(d Domain, credential string) (string, time.Time, error) {
	now := s.now().Truncate(time.Second)
	exp := now.Add(s.ttl)
	c := Claims{
		DomainID: d.ID, Subdomain: d.Subdomain, Port: d.LocalPort, Wallet: d.Account, PortVersion: d.PortVersion, Credential: credential,
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: tokenIssuer, Audience: jwt.ClaimStrings{tokenAudience}, Subject: d.ID,
			IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(exp),
			ID: uuid.NewString(),
		},
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(s.key)
	return tok, exp, err
}

// Parse checks a token's signature, algorithm, issuer, audience and times
// and returns its claims; anything wrong is fault.Unauthenticated
// "invalid tunnel token".
func (s *Signer) Parse(token string) (Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return s.key, nil },
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithIssuer(tokenIssuer), jwt.WithAudience(tokenAudience),
		jwt.WithExpirationRequired(), jwt.WithIssuedAt(), jwt.WithTimeFunc(s.now),
		jwt.WithLeeway(5*time.Second))
	if err != nil {
		return Claims{}, fault.Wrap(err, fault.Unauthenticated, MsgInvalidToken)
	}
	if c.DomainID == "" || c.Subdomain == "" || c.Port == 0 {
		return Claims{}, fault.New(fault.Unauthenticated, MsgInvalidToken)
	}
	return c, nil
}
