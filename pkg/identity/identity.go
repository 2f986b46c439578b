// Package identity says who a browser connection is: the subject of an
// identity token signed by the site's web server, or an anonymous id the
// browser chose, and turns either into the visitor key the hub counts by.
//
// Tokens are JWTs signed with HS256 and a secret the web servers share
// with the nodes; Verify allows no other algorithm and requires "sub" and
// "exp". Anonymous ids prove nothing: anyone can send anyone's id. Keys of
// the two kinds never meet: the token subject "alice" and the anonymous id
// "alice" are two visitors.
package identity

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Bounds of a visitor's names.
const (
	// MaxSubjectLen is the longest token subject, in bytes.
	MaxSubjectLen = 128
	// MaxVisitorIDLen is the longest anonymous id.
	MaxVisitorIDLen = 64
	// Leeway is how long after its "exp" a token is still taken, for
	// clocks a little apart.
	Leeway = 5 * time.Second
)

// Kind says what vouches for a visitor key.
type Kind int

const (
	// Unknown: not a visitor key.
	Unknown Kind = iota
	// Token: the subject of a verified identity token.
	Token
	// Anonymous: an id the browser chose.
	Anonymous
)

func (k Kind) String() string {
	switch k {
	case Token:
		return "token"
	case Anonymous:
		return "anonymous"
	}
	return "unknown"
}

// The prefixes that keep the kinds of keys apart.
const (
	tokenPrefix     = "t:"
	anonymousPrefix = "a:"
)

// TokenKey returns the visitor key of a verified token subject.
func TokenKey(sub string) string { return tokenPrefix + sub }

// AnonymousKey returns the visitor key of an anonymous id.
func AnonymousKey(id string) string { return anonymousPrefix + id }

// Split returns what kind of key key is and the subject or id it holds.
func Split(key string) (Kind, string) {
	if s, ok := strings.CutPrefix(key, tokenPrefix); ok {
		return Token, s
	}
	if s, ok := strings.CutPrefix(key, anonymousPrefix); ok {
		return Anonymous, s
	}
	return Unknown, key
}

// ErrInvalidID is wrapped by ValidateVisitorID's errors.
var ErrInvalidID = errors.New("invalid visitor id")

// ValidateVisitorID accepts 1 to MaxVisitorIDLen characters of A-Z, a-z,
// 0-9, '_' and '-'. Its errors are fit to show the browser.
func ValidateVisitorID(id string) error {
	if id == "" || len(id) > MaxVisitorIDLen {
		return fmt.Errorf("%w: \"visitor\" must be 1 to %d characters", ErrInvalidID, MaxVisitorIDLen)
	}
	for i := range len(id) {
		b := id[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || b == '-' || b == '_') {
			return fmt.Errorf("%w: \"visitor\" may hold only letters, digits, '-' and '_'", ErrInvalidID)
		}
	}
	return nil
}

// The errors of Verify; each says what a browser may be told.
var (
	// ErrNoSecret: the node has no token secret, so it takes no token.
	ErrNoSecret = errors.New("this node takes no identity token (no token secret set)")
	// ErrExpired: the token's "exp" has passed.
	ErrExpired = errors.New("identity token expired")
	// ErrInvalidToken: anything else wrong with the token: not a JWT,
	// another algorithm, a wrong signature, a missing or bad claim.
	ErrInvalidToken = errors.New("invalid identity token")
)

// Verifier checks identity tokens against one secret.
type Verifier struct {
	secret []byte
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for secret; an empty secret refuses
// every token with ErrNoSecret.
func NewVerifier(secret []byte) *Verifier {
	return &Verifier{
		secret: secret,
		parser: jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithExpirationRequired(), jwt.WithLeeway(Leeway)),
	}
}

// Verify returns the subject of token when it is a JWT signed with HS256
// and the Verifier's secret, not expired, whose "sub" is 1 to
// MaxSubjectLen bytes. Its errors wrap ErrNoSecret, ErrExpired or
// ErrInvalidToken and say why, in words fit for the browser.
func (v *Verifier) Verify(token string) (string, error) {
	if v == nil || len(v.secret) == 0 {
		return "", ErrNoSecret
	}
	var c jwt.RegisteredClaims
	_, err := v.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return v.secret, nil })
	switch {
	case errors.Is(err, jwt.ErrTokenExpired):
		return "", ErrExpired
	case errors.Is(err, jwt.ErrTokenMalformed):
		return "", fmt.Errorf("%w: not a JWT", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
		return "", fmt.Errorf("%w: not signed with HS256 and this node's secret", ErrInvalidToken)
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return "", fmt.Errorf("%w: \"exp\" is required", ErrInvalidToken)
	case err != nil:
		return "", fmt.Errorf("%w: bad claims", ErrInvalidToken)
	case c.Subject == "" || len(c.Subject) > MaxSubjectLen:
		return "", fmt.Errorf("%w: \"sub\" must be 1 to %d bytes", ErrInvalidToken, MaxSubjectLen)
	}
	return c.Subject, nil
}

// Mint returns an identity token for sub, valid for ttl: a JWT signed
// with HS256 and secret, with "sub", "iat" and "exp". It is what a web
// server hands the browser of a signed-in user.
func Mint(secret []byte, sub string, ttl time.Duration) (string, error) {
	switch {
	case len(secret) == 0:
		return "", errors.New("failed to mint a token: empty secret")
	case sub == "" || len(sub) > MaxSubjectLen:
		return "", fmt.Errorf("failed to mint a token: sub must be 1 to %d bytes", MaxSubjectLen)
	case ttl <= 0:
		return "", errors.New("failed to mint a token: ttl must be positive")
	}
	now := time.Now()
	claims := jwt.RegisteredClaims{Subject: sub, IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(ttl))}
	return jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString(secret)
}
