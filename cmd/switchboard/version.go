package main

import (
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
	"strings"
)

// isVersion reports whether args ask for the version: "switchboard
// version" or "switchboard --version".
func isVersion(args []string) bool {
	return len(args) == 1 && (args[0] == "version" || args[0] == "--version" || args[0] == "-version")
}

// printVersion writes the version of the running binary.
func printVersion(w io.Writer) {
	info, _ := debug.ReadBuildInfo()
	fmt.Fprintln(w, formatVersion(info))
}

// formatVersion describes a build as the Go toolchain recorded it: the
// module version, the VCS revision and its time (stamped by go build in a
// git checkout), whether the tree had local changes, and the Go version.
func formatVersion(info *debug.BuildInfo) string {
	platform := runtime.GOOS + "/" + runtime.GOARCH
	if info == nil {
		return "switchboard (no build information) " + runtime.Version() + " " + platform
	}
	var revision, at string
	var modified bool
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	var b strings.Builder
	b.WriteString("switchboard " + info.Main.Version)
	if revision != "" {
		b.WriteString(" revision " + revision)
		if at != "" {
			b.WriteString(" (" + at + ")")
		}
		if modified {
			b.WriteString(" with local changes")
		}
	}
	b.WriteString(" " + info.GoVersion + " " + platform)
	return b.String()
}
