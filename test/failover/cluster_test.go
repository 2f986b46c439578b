package failover

// This file starts the deployment: nginx from the template in front of
// a primary, a standby and the example web servers, each a process of
// its own (internal/proctest).

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/nginxtest"
	"github.com/switchboard-rt/switchboard/internal/proctest"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// waitTimeout bounds every wait for something that should happen soon; it
// is generous because the tests run with -race on two busy cores.
const waitTimeout = proctest.WaitTimeout

// testToken is the API token the nodes require and the web servers send.
const testToken = "failover-test-token"

func TestMain(m *testing.M) { proctest.Main(m) }

// binaries holds the paths of the programs under test.
type binaries struct {
	switchboard, webserver, nginx string
}

// needBinaries builds ./cmd/switchboard and ./examples/webserver once per
// run and finds nginx: missing, it skips the test, or fails it where
// tests must not skip (see internal/testenv).
func needBinaries(t testing.TB) binaries {
	t.Helper()
	ngx := nginxtest.Find(t)
	return binaries{
		switchboard: proctest.Build(t, "./cmd/switchboard"),
		webserver:   proctest.Build(t, "./examples/webserver"),
		nginx:       ngx,
	}
}

// moduleRoot is the repository's root.
func moduleRoot() string { return proctest.ModuleRoot() }

// templatePath is the nginx template deploy/compose.yaml mounts.
func templatePath() string {
	return filepath.Join(moduleRoot(), "deploy", "nginx", "nginx.conf.template")
}

// cluster is one deployment on loopback: nginx in front of a primary, a
// standby and two web servers, as deploy/compose.yaml runs it.
type cluster struct {
	t    testing.TB
	bin  binaries
	opts clusterOptions

	primaryHTTP, primaryGRPC string
	standbyHTTP, standbyGRPC string
	web1, web2               string
	nginxHTTP, nginxGRPC     string

	primary, standby, nginx *proctest.Proc
	webs                    []*proctest.Proc
}

type clusterOptions struct {
	noWebServers bool     // benchmarks need no pages
	nodeEnv      []string // more settings for both nodes
}

func startCluster(t testing.TB, opts clusterOptions) *cluster {
	t.Helper()
	bin := needBinaries(t)
	c := &cluster{
		t: t, bin: bin, opts: opts,
		primaryHTTP: proctest.FreeAddr(t), primaryGRPC: proctest.FreeAddr(t),
		standbyHTTP: proctest.FreeAddr(t), standbyGRPC: proctest.FreeAddr(t),
		web1: proctest.FreeAddr(t), web2: proctest.FreeAddr(t),
		nginxHTTP: proctest.FreeAddr(t), nginxGRPC: proctest.FreeAddr(t),
	}
	// Started together, as compose does: the primary waits for the
	// standby's log (SWITCHBOARD_STANDBY_WAIT) and serves once it has it.
	c.startPrimary()
	c.standby = proctest.Start(t, "standby", c.nodeEnv(c.standbyHTTP, c.standbyGRPC,
		"SWITCHBOARD_PRIMARY_ADDR="+c.primaryGRPC), bin.switchboard)
	c.waitHTTP(c.primaryHTTP+"/readyz", "primary ready")
	c.waitHTTP(c.standbyHTTP+"/healthz", "standby alive")

	prefix := nginxtest.Prefix(t, templatePath(), map[string]string{
		"LISTEN_HTTP": c.nginxHTTP, "LISTEN_GRPC": c.nginxGRPC,
		"PRIMARY_HTTP": c.primaryHTTP, "STANDBY_HTTP": c.standbyHTTP,
		"PRIMARY_GRPC": c.primaryGRPC, "STANDBY_GRPC": c.standbyGRPC,
		"WEB1": c.web1, "WEB2": c.web2,
		"ACCESS_LOG": "access.log",
	})
	c.nginx = nginxtest.Start(t, bin.nginx, prefix)
	c.waitHTTP(c.nginxHTTP+"/nginx-healthz", "nginx up")

	if !opts.noWebServers {
		for i, addr := range []string{c.web1, c.web2} {
			env := append(proctest.CleanEnv(),
				"LISTEN_ADDR="+addr,
				"SWITCHBOARD_ADDR="+c.nginxGRPC, // through nginx: emits fail over too
				"SWITCHBOARD_API_TOKEN="+testToken,
				"SWITCHBOARD_PUBLIC_URLS=ws://"+c.nginxHTTP+"/ws",
				fmt.Sprintf("SITE_NAME=web%d", i+1))
			c.webs = append(c.webs, proctest.Start(t, fmt.Sprintf("web%d", i+1), env, bin.webserver))
			c.waitHTTP(addr+"/healthz", fmt.Sprintf("web%d up", i+1))
		}
	}
	return c
}

func (c *cluster) nodeEnv(httpAddr, grpcAddr string, extra ...string) []string {
	extra = append(extra, c.opts.nodeEnv...)
	return append(append(proctest.CleanEnv(),
		"SWITCHBOARD_HTTP_ADDR="+httpAddr,
		"SWITCHBOARD_GRPC_ADDR="+grpcAddr,
		"SWITCHBOARD_API_TOKEN="+testToken,
		"SWITCHBOARD_LOG_LEVEL=warn",
		// nginx is the nodes' only peer; its X-Forwarded-For names the
		// browser, as in deploy/compose.yaml. The per-address limit then
		// applies per browser, not to nginx as a whole.
		"SWITCHBOARD_TRUSTED_PROXIES=127.0.0.1/32",
	), extra...)
}

// startPrimary starts (or restarts, on the same ports) the primary.
func (c *cluster) startPrimary() {
	c.primary = proctest.Start(c.t, "primary", c.nodeEnv(c.primaryHTTP, c.primaryGRPC, "SWITCHBOARD_STANDBY_WAIT=3s"), c.bin.switchboard)
}

// waitHTTP polls http://url until it answers 200.
func (c *cluster) waitHTTP(url, what string) {
	c.t.Helper()
	proctest.WaitHTTP(c.t, url, what)
}

// wsURL and origin are what a page served through nginx uses.
func (c *cluster) wsURL() string  { return "ws://" + c.nginxHTTP + "/ws" }
func (c *cluster) origin() string { return "http://" + c.nginxHTTP }

// counter dials a node's gRPC listener directly (not through nginx).
func (c *cluster) counter(grpcAddr string) *client.Client {
	c.t.Helper()
	cl, err := client.Dial(grpcAddr, client.WithToken(testToken))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cl.Close() })
	return cl
}

// count asks a node for its count, -1 when it does not answer.
func count(cl *client.Client) int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	n, err := cl.Count(ctx, "")
	if err != nil {
		return -1
	}
	return n
}

// metricCount reads switchboard_local_connections from a node's /metrics:
// a standby refuses GetOnlineCount while its primary serves, but still
// reports the browsers it holds there. -1 when it does not answer.
func metricCount(httpAddr string) int64 { return proctest.LocalConnections(httpAddr) }

// waitCount polls a node until its count is want and returns how long
// that took.
func waitCount(t testing.TB, what string, cl *client.Client, want int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got int64
	for time.Since(start) < timeout {
		if got = count(cl); got == want {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: count %d after %v; want %d", what, got, timeout, want)
	return 0
}

// kill ends the primary with SIGKILL, as a crash would, and waits for it.
func (c *cluster) killPrimary() time.Time {
	c.t.Helper()
	return c.primary.Kill(c.t)
}

// waitMetric polls a node's /metrics until it holds want browsers.
func waitMetric(t testing.TB, what, httpAddr string, want int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	var got int64
	for time.Since(start) < timeout {
		if got = metricCount(httpAddr); got == want {
			return time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s: %d browsers after %v; want %d", what, got, timeout, want)
	return 0
}

// healthcheck runs "switchboard healthcheck" against a node, as the
// image's HEALTHCHECK does.
func (c *cluster) healthcheck(httpAddr string, args ...string) ([]byte, error) {
	cmd := exec.Command(c.bin.switchboard, append([]string{"healthcheck"}, args...)...)
	cmd.Env = append(proctest.CleanEnv(), "SWITCHBOARD_HTTP_ADDR="+httpAddr)
	return cmd.CombinedOutput()
}
