package testenv

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMissing runs a test that lacks a program in a child process, with
// and without the variable, and checks that it fails or skips.
func TestMissing(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		Missing(t, "no frobnicator found; install frobnicator")
		return
	}
	tests := []struct {
		name string
		env  []string
		fail bool
		want string
	}{
		{"alone", nil, false, "--- SKIP: TestMissing"},
		{"required", []string{RequireVar + "=1"}, true, "--- FAIL: TestMissing"},
		{"CI", []string{"CI=true"}, true, "--- FAIL: TestMissing"},
	}
	for _, tc := range tests {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMissing$", "-test.v")
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, RequireVar+"=") && !strings.HasPrefix(kv, "CI=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "TESTENV_CHILD=1")
		cmd.Env = append(cmd.Env, tc.env...)
		out, err := cmd.CombinedOutput()
		if failed := err != nil; failed != tc.fail {
			t.Errorf("%s: failed %v; want %v\n%s", tc.name, failed, tc.fail, out)
		}
		if !strings.Contains(string(out), tc.want) || !strings.Contains(string(out), "no frobnicator found") {
			t.Errorf("%s: output %q; want %q and the reason", tc.name, out, tc.want)
		}
	}
}
