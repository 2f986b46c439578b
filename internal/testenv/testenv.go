// Package testenv decides what a test does when a program it needs, such
// as Chromium, nginx or Node.js, is not installed: it skips, except where
// tests must never skip for want of one. `make test` and .ci/run set
// SWITCHBOARD_REQUIRE_TEST_TOOLS=1 (CI=true counts too), and install what
// is missing first, so there a missing program fails the test.
package testenv

import (
	"os"
	"testing"
)

// RequireVar is the environment variable that turns a missing program
// from a skip into a failure.
const RequireVar = "SWITCHBOARD_REQUIRE_TEST_TOOLS"

// Required reports whether a missing program must fail the test.
func Required() bool {
	return os.Getenv(RequireVar) != "" || os.Getenv("CI") != ""
}

// Missing ends the test for want of a program: it fails the test when
// Required, and skips it otherwise. what says what is missing and how to
// install it.
func Missing(t testing.TB, what string) {
	t.Helper()
	if Required() {
		t.Fatalf("%s (tests may not skip here: %s or CI is set; `make test` installs what it needs)", what, RequireVar)
	}
	t.Skip(what)
}
