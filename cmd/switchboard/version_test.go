package main

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"
)

func TestFormatVersion(t *testing.T) {
	t.Parallel()
	platform := runtime.GOOS + "/" + runtime.GOARCH
	tests := []struct {
		name string
		info *debug.BuildInfo
		want string
	}{
		{
			name: "from a clean checkout",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.0"}, Settings: []debug.BuildSetting{
				{Key: "vcs", Value: "git"},
				{Key: "vcs.revision", Value: "1a1bfd9953d500fc7d6a431348c5674aad558afe"},
				{Key: "vcs.time", Value: "2026-12-01T23:59:52Z"},
				{Key: "vcs.modified", Value: "false"},
			}},
			want: "switchboard v1.2.0 revision 1a1bfd9953d500fc7d6a431348c5674aad558afe (2026-12-01T23:59:52Z) go1.26.8 " + platform,
		},
		{
			name: "with local changes",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201235952-1a1bfd9953d5+dirty"}, Settings: []debug.BuildSetting{
				{Key: "vcs.revision", Value: "1a1bfd9953d5"},
				{Key: "vcs.modified", Value: "true"},
			}},
			want: "switchboard v0.0.0-20261201235952-1a1bfd9953d5+dirty revision 1a1bfd9953d5 with local changes go1.26.8 " + platform,
		},
		{
			name: "without VCS information",
			info: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			want: "switchboard (devel) go1.26.8 " + platform,
		},
		{name: "without build information", want: "switchboard (no build information) " + runtime.Version() + " " + platform},
	}
	for _, tc := range tests {
		if got := formatVersion(tc.info); got != tc.want {
			t.Errorf("%s: got %q; want %q", tc.name, got, tc.want)
		}
	}
}

func TestIsVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want bool
	}{
		{[]string{"version"}, true},
		{[]string{"--version"}, true},
		{[]string{"-version"}, true},
		{nil, false},
		{[]string{"--http-addr", "version"}, false},
		{[]string{"healthcheck"}, false},
	} {
		if got := isVersion(tc.args); got != tc.want {
			t.Errorf("isVersion(%q): got %v; want %v", tc.args, got, tc.want)
		}
	}
}

// TestUsage checks that -h names the browser library and the commands.
func TestUsage(t *testing.T) {
	t.Parallel()
	var stderr strings.Builder
	if _, _, err := parseConfig([]string{"-h"}, env(nil), &stderr); err == nil {
		t.Fatal("parseConfig(-h): got nil; want flag.ErrHelp")
	}
	for _, want := range []string{"/client.js", "switchboard version", "switchboard healthcheck", "--http-addr"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("-h wrote %q; want it to contain %q", stderr.String(), want)
		}
	}
}
