package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/switchboard-rt/switchboard/pkg/cluster"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// parseCluster reads the cluster settings; with no NATS URL the node is a
// single node or one of a pair, and the other settings are not used.
func parseCluster(cfg *server.Config, get func(string) string, parse func(string, func(string) error)) {
	urls := get("nats-url")
	if urls == "" {
		return
	}
	c := cluster.Config{Name: get("cluster-name"), Member: get("node-name"), CredsFile: get("nats-creds"), CAFile: get("nats-ca")}
	for _, u := range strings.Split(urls, ",") {
		if u = strings.TrimSpace(u); u != "" {
			c.URLs = append(c.URLs, u)
		}
	}
	parse("nats-replicas", func(s string) error {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > 5 {
			return errors.New("want 1 to 5 NATS servers")
		}
		c.Replicas = n
		return nil
	})
	// Each setting is checked alone, so that an error names its own.
	check := func(name string, part cluster.Config) {
		parse(name, func(string) error {
			if len(part.URLs) == 0 {
				part.URLs = []string{"nats://127.0.0.1:4222"}
			}
			return part.Check()
		})
	}
	check("nats-url", cluster.Config{URLs: c.URLs})
	check("cluster-name", cluster.Config{Name: c.Name})
	check("node-name", cluster.Config{Member: c.Member})
	check("nats-creds", cluster.Config{CredsFile: c.CredsFile})
	check("nats-ca", cluster.Config{CAFile: c.CAFile})
	parse("primary-addr", func(s string) error {
		if s != "" {
			return errors.New("a cluster member has no primary: SWITCHBOARD_PRIMARY_ADDR and SWITCHBOARD_NATS_URL exclude each other")
		}
		return nil
	})
	cfg.Cluster = c
}
