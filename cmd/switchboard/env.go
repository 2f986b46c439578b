package main

import (
	"slices"
	"strings"
)

// otherPrograms lists the SWITCHBOARD_ variables that the project's other
// programs read, so that a node sharing their environment does not warn
// about them: the example web servers (SWITCHBOARD_ADDR,
// SWITCHBOARD_PUBLIC_URLS), and the tests and benchmarks.
var otherPrograms = []string{
	"SWITCHBOARD_ADDR",
	"SWITCHBOARD_PUBLIC_URLS",
	"SWITCHBOARD_BIN",
	"SWITCHBOARD_FAILOVER_N",
	"SWITCHBOARD_SOAK",
	"SWITCHBOARD_REQUIRE_TEST_TOOLS",
}

// unknownVar is a SWITCHBOARD_ variable no option reads, with the option
// variable whose name is nearest to it.
type unknownVar struct {
	name, nearest string
}

// unknownEnv returns the SWITCHBOARD_ variables of environ (KEY=value
// entries) that neither an option nor another program of the project
// reads, sorted by name: most likely misspelled settings, which would
// otherwise be ignored without a word.
func unknownEnv(environ []string) []unknownVar {
	var out []unknownVar
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "SWITCHBOARD_") || slices.Contains(otherPrograms, name) || isOption(name) {
			continue
		}
		out = append(out, unknownVar{name: name, nearest: nearestOption(name)})
	}
	slices.SortFunc(out, func(a, b unknownVar) int { return strings.Compare(a.name, b.name) })
	return slices.CompactFunc(out, func(a, b unknownVar) bool { return a.name == b.name })
}

func isOption(env string) bool {
	for _, o := range options {
		if o.env == env {
			return true
		}
	}
	return false
}

// nearestOption returns the option variable with the smallest edit
// distance to name, the first in the options list on a tie.
func nearestOption(name string) string {
	best, bestD := "", -1
	for _, o := range options {
		if d := editDistance(name, o.env); bestD < 0 || d < bestD {
			best, bestD = o.env, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
