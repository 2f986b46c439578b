package cluster

// This file starts a cluster on loopback as deploy/cluster/compose.yaml
// runs it: NATS, three nodes named node1..node3, nginx from the
// template, and, when asked, the example web servers.

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/browsersim"
	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/internal/nginxtest"
	"github.com/switchboard-rt/switchboard/internal/proctest"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// waitTimeout bounds every wait for something that should happen soon.
const waitTimeout = proctest.WaitTimeout

// testToken is the API token the nodes require and the callers send.
const testToken = "cluster-test-token"

func TestMain(m *testing.M) { proctest.Main(m) }

// binaries holds the paths of the programs under test.
type binaries struct {
	switchboard, webserver, nginx string
}

// needBinaries builds the node and the example web server once per run
// and finds nginx and nats-server.
func needBinaries(t testing.TB) binaries {
	t.Helper()
	b := binaries{nginx: nginxtest.Find(t)}
	natstest.Find(t)
	b.switchboard = proctest.Build(t, "./cmd/switchboard")
	b.webserver = proctest.Build(t, "./examples/webserver")
	return b
}

// templatePath is the nginx template deploy/cluster/compose.yaml mounts.
func templatePath() string {
	return filepath.Join(proctest.ModuleRoot(), "deploy", "cluster", "nginx.conf.template")
}

// options shape a deployment.
type options struct {
	// singleNATS runs one nats-server (the stream with one replica)
	// instead of a three-server NATS cluster, for scenarios that take
	// NATS away as a whole.
	singleNATS bool
	// webServers starts web1 and web2 behind nginx.
	webServers bool
	// nodeEnv holds more settings for every node.
	nodeEnv []string
}

// deployment is one cluster on loopback.
type deployment struct {
	t    testing.TB
	bin  binaries
	opts options

	nats                 []*natstest.Server
	nodes                []*node
	nginxHTTP, nginxGRPC string
	webs                 []string
	nginx                *proctest.Proc
	api                  *client.Client // through nginx
	// nodesReady is how long the nodes, started together on a NATS that
	// had just come up, took until every one was ready.
	nodesReady time.Duration
}

// node is one Switchboard process of the cluster.
type node struct {
	d          *deployment
	name       string
	http, grpc string
	admin      string // the admin listener: /metrics until the shutdown is over
	proc       *proctest.Proc
	api        *client.Client // straight to the node
}

func startDeployment(t testing.TB, opts options) *deployment {
	t.Helper()
	d := &deployment{t: t, bin: needBinaries(t), opts: opts, nginxHTTP: proctest.FreeAddr(t), nginxGRPC: proctest.FreeAddr(t)}
	if opts.singleNATS {
		d.nats = []*natstest.Server{natstest.StartOne(t)}
	} else {
		d.nats = natstest.StartCluster(t)
	}
	for i := range 3 {
		d.nodes = append(d.nodes, &node{d: d, name: fmt.Sprintf("node%d", i+1), http: proctest.FreeAddr(t), grpc: proctest.FreeAddr(t), admin: proctest.FreeAddr(t)})
	}
	started := time.Now()
	for _, n := range d.nodes {
		n.start()
	}
	for _, n := range d.nodes {
		n.waitReady("at the start")
		n.api = dial(t, n.grpc)
	}
	d.nodesReady = time.Since(started)
	// The template names two web servers; without webServers their
	// ports answer nothing.
	d.webs = []string{proctest.FreeAddr(t), proctest.FreeAddr(t)}
	vars := map[string]string{
		"LISTEN_HTTP": d.nginxHTTP, "LISTEN_GRPC": d.nginxGRPC,
		"WEB1": d.webs[0], "WEB2": d.webs[1], "ACCESS_LOG": "access.log",
	}
	for i, n := range d.nodes {
		vars[fmt.Sprintf("NODE%d_HTTP", i+1)] = n.http
		vars[fmt.Sprintf("NODE%d_GRPC", i+1)] = n.grpc
	}
	d.nginx = nginxtest.Start(t, d.bin.nginx, nginxtest.Prefix(t, templatePath(), vars))
	proctest.WaitHTTP(t, d.nginxHTTP+"/nginx-healthz", "nginx up")
	d.api = dial(t, d.nginxGRPC)
	if opts.webServers {
		for i, addr := range d.webs {
			env := append(proctest.CleanEnv(),
				"LISTEN_ADDR="+addr,
				"SWITCHBOARD_ADDR="+d.nginxGRPC,
				"SWITCHBOARD_API_TOKEN="+testToken,
				"SWITCHBOARD_PUBLIC_URLS="+d.wsURL(),
				fmt.Sprintf("SITE_NAME=web%d", i+1))
			proctest.Start(t, fmt.Sprintf("web%d", i+1), env, d.bin.webserver)
			proctest.WaitHTTP(t, addr+"/healthz", fmt.Sprintf("web%d up", i+1))
		}
	}
	return d
}

func dial(t testing.TB, addr string) *client.Client {
	t.Helper()
	c, err := client.Dial(addr, client.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// env is the node's environment, as compose gives it.
func (n *node) env() []string {
	replicas := "3"
	if n.d.opts.singleNATS {
		replicas = "1"
	}
	return append(append(proctest.CleanEnv(),
		"SWITCHBOARD_HTTP_ADDR="+n.http,
		"SWITCHBOARD_GRPC_ADDR="+n.grpc,
		"SWITCHBOARD_ADMIN_ADDR="+n.admin,
		"SWITCHBOARD_API_TOKEN="+testToken,
		"SWITCHBOARD_LOG_LEVEL=warn",
		// nginx is the nodes' only peer; its X-Forwarded-For names the
		// browser, as in compose.
		"SWITCHBOARD_TRUSTED_PROXIES=127.0.0.1/32",
		"SWITCHBOARD_NATS_URL="+natstest.URLs(n.d.nats),
		"SWITCHBOARD_NODE_NAME="+n.name,
		"SWITCHBOARD_NATS_REPLICAS="+replicas,
	), n.d.opts.nodeEnv...)
}

// start starts (or restarts, on the same ports) the node.
func (n *node) start() {
	n.proc = proctest.Start(n.d.t, n.name, n.env(), n.d.bin.switchboard)
}

// waitReady waits until the node's /readyz answers 200.
func (n *node) waitReady(what string) {
	n.d.t.Helper()
	proctest.WaitHTTP(n.d.t, n.http+"/readyz", n.name+" ready "+what)
}

// ready reports whether /readyz answers 200.
func (n *node) ready() bool {
	code, _ := proctest.Status(n.http + "/readyz")
	return code == 200
}

// kill ends the node with SIGKILL and returns when it was sent.
func (n *node) kill() time.Time {
	return n.proc.Kill(n.d.t)
}

// term sends SIGTERM and returns when it was sent.
func (n *node) term() time.Time {
	at := time.Now()
	n.proc.Signal(n.d.t, syscall.SIGTERM)
	return at
}

// count asks the node for the cluster's count, -1 when it does not
// answer.
func (n *node) count() int64 {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := n.api.Count(ctx, "")
	if err != nil {
		return -1
	}
	return c
}

// local reads the browsers the node holds itself from its admin
// listener (up while it drains), -1 when it does not answer.
func (n *node) local() int64 {
	return proctest.LocalConnections(n.admin)
}

// live returns the nodes still running.
func (d *deployment) live() []*node {
	var out []*node
	for _, n := range d.nodes {
		if !n.proc.Exited() {
			out = append(out, n)
		}
	}
	return out
}

// locals returns every live node's own browsers, and their sum.
func (d *deployment) locals() ([]int64, int64) {
	var each []int64
	var sum int64
	for _, n := range d.live() {
		l := n.local()
		each = append(each, l)
		sum += l
	}
	return each, sum
}

// counts returns every live node's cluster-wide count.
func (d *deployment) counts() []int64 {
	var out []int64
	for _, n := range d.live() {
		out = append(out, n.count())
	}
	return out
}

// waitCounts waits until every live node counts want and the live nodes
// hold want browsers between them, and returns how long that took.
func (d *deployment) waitCounts(t testing.TB, what string, want int64, timeout time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		counts := d.counts()
		each, sum := d.locals()
		if sum == want && !slices.ContainsFunc(counts, func(c int64) bool { return c != want }) {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: nodes count %v and hold %v (%d) after %v; want %d everywhere", what, counts, each, sum, timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// wsURL and origin are what a page served through nginx uses.
func (d *deployment) wsURL() string  { return "ws://" + d.nginxHTTP + "/ws" }
func (d *deployment) origin() string { return "http://" + d.nginxHTTP }

// emit emits text as a ShowMessage through c, retrying as pkg/client does
// until it is acknowledged or the wait ends.
func emit(t testing.TB, c *client.Client, text string) client.EmitResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res, err := c.Emit(ctx, "ShowMessage", map[string]string{"text": text})
	if err != nil {
		t.Fatalf("emit %q: %v", text, err)
	}
	return res
}

// assertOnce checks that every one of clients got message id exactly
// once.
func assertOnce(t testing.TB, f *browsersim.Fleet, clients []*browsersim.Client, what, id string) {
	t.Helper()
	took := f.WaitFramesOf(t, what, clients, id)
	time.Sleep(200 * time.Millisecond) // room for a duplicate to show up
	twice := 0
	for _, c := range clients {
		if c.Frames(id) != 1 {
			twice++
		}
	}
	if twice > 0 {
		t.Errorf("%s: %d of %d clients got message %s more than once; want once", what, twice, len(clients), id)
	}
	t.Logf("%s: message reached all %d clients once, the last %v after the emit returned", what, len(clients), took.Round(time.Millisecond))
}

// sameOrder checks that every client got the messages ids in one order
// (the first client's), each once, and returns how many ids that was.
func sameOrder(t testing.TB, clients []*browsersim.Client, ids map[string]bool) int {
	t.Helper()
	var ref []string
	mismatched := 0
	for i, c := range clients {
		var got []string
		for _, id := range c.Order() {
			if ids[id] {
				got = append(got, id)
			}
		}
		if len(got) != len(ids) {
			t.Errorf("client %d got %d of the %d messages", i, len(got), len(ids))
			continue
		}
		for _, id := range got {
			if n := c.Frames(id); n != 1 {
				t.Errorf("client %d got message %s %d times; want once", i, id, n)
			}
		}
		if ref == nil {
			ref = got
		} else if !slices.Equal(ref, got) {
			mismatched++
		}
	}
	if mismatched > 0 {
		t.Errorf("%d of %d clients got the messages in another order than the first client", mismatched, len(clients))
	}
	return len(ref)
}

// joinInts formats counts for a log line.
func joinInts(v []int64) string {
	s := make([]string, len(v))
	for i, n := range v {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, "/")
}
