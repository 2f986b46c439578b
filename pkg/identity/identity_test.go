package identity_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/switchboard-rt/switchboard/pkg/identity"
)

var secret = []byte("s3cret-of-the-site")

func sign(t *testing.T, m jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, c).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerify(t *testing.T) {
	t.Parallel()
	now := time.Now()
	exp := now.Add(time.Minute).Unix()
	v := identity.NewVerifier(secret)
	minted, err := identity.Mint(secret, "user-42", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		token   string
		sub     string
		wantErr error
	}{
		{"minted", minted, "user-42", nil},
		{"valid", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": exp}), "alice", nil},
		{"within the leeway", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": now.Add(-2 * time.Second).Unix()}), "alice", nil},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice", "exp": now.Add(-time.Minute).Unix()}), "", identity.ErrExpired},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another"), jwt.MapClaims{"sub": "alice", "exp": exp}), "", identity.ErrInvalidToken},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwt.MapClaims{"sub": "alice", "exp": exp}), "", identity.ErrInvalidToken},
		{"HS512", sign(t, jwt.SigningMethodHS512, secret, jwt.MapClaims{"sub": "alice", "exp": exp}), "", identity.ErrInvalidToken},
		{"garbage", "not.a.token", "", identity.ErrInvalidToken},
		{"empty", "", "", identity.ErrInvalidToken},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": "alice"}), "", identity.ErrInvalidToken},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"exp": exp}), "", identity.ErrInvalidToken},
		{"sub too long", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": strings.Repeat("x", 129), "exp": exp}), "", identity.ErrInvalidToken},
		{"sub not a string", sign(t, jwt.SigningMethodHS256, secret, jwt.MapClaims{"sub": 7, "exp": exp}), "", identity.ErrInvalidToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			sub, err := v.Verify(tt.token)
			if !errors.Is(err, tt.wantErr) || sub != tt.sub {
				t.Errorf("Verify: got %q, %v; want %q, %v", sub, err, tt.sub, tt.wantErr)
			}
		})
	}
	if _, err := identity.NewVerifier(nil).Verify(minted); !errors.Is(err, identity.ErrNoSecret) {
		t.Errorf("Verify without a secret: got %v; want ErrNoSecret", err)
	}
}

func TestMintRefuses(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		secret []byte
		sub    string
		ttl    time.Duration
	}{{nil, "a", time.Minute}, {secret, "", time.Minute}, {secret, strings.Repeat("x", 129), time.Minute}, {secret, "a", 0}} {
		if tok, err := identity.Mint(tt.secret, tt.sub, tt.ttl); err == nil {
			t.Errorf("Mint(%q, %q, %v): got %q; want an error", tt.secret, tt.sub, tt.ttl, tok)
		}
	}
}

func TestKeys(t *testing.T) {
	t.Parallel()
	if identity.TokenKey("alice") == identity.AnonymousKey("alice") {
		t.Fatal("the token subject alice and the anonymous alice share a key")
	}
	for _, tt := range []struct {
		key  string
		kind identity.Kind
		id   string
	}{{identity.TokenKey("a:b"), identity.Token, "a:b"}, {identity.AnonymousKey("x-1"), identity.Anonymous, "x-1"}, {"other", identity.Unknown, "other"}} {
		if kind, id := identity.Split(tt.key); kind != tt.kind || id != tt.id {
			t.Errorf("Split(%q): got %v, %q; want %v, %q", tt.key, kind, id, tt.kind, tt.id)
		}
	}
}

func TestValidateVisitorID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "A-z_09", strings.Repeat("x", 64)} {
		if err := identity.ValidateVisitorID(ok); err != nil {
			t.Errorf("ValidateVisitorID(%q): got %v; want nil", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 65), "a b", "é", "a.b", "a/b", "a:b"} {
		if err := identity.ValidateVisitorID(bad); !errors.Is(err, identity.ErrInvalidID) {
			t.Errorf("ValidateVisitorID(%q): got %v; want ErrInvalidID", bad, err)
		}
	}
}
