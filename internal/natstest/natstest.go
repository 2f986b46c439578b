// Package natstest runs the real nats-server binary for process-level
// tests: one server with JetStream, or a three-server NATS cluster from
// deploy/cluster/nats.conf, the file compose mounts, each on free
// loopback ports with its store in a directory of the test's, and each
// killed and restarted on the same ports and store as the test asks.
package natstest

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/switchboard-rt/switchboard/internal/proctest"
	"github.com/switchboard-rt/switchboard/internal/testenv"
)

// Version is the nats-server release scripts/install-tools.sh installs.
const Version = "v2.15.2"

var (
	findOnce sync.Once
	found    string
)

// Find returns the path of nats-server: on the PATH, or where `go install`
// puts it (GOBIN, GOPATH/bin). Missing, it skips the test, or fails it
// where tests must not skip (see internal/testenv).
func Find(t testing.TB) string {
	t.Helper()
	findOnce.Do(func() {
		if p, err := exec.LookPath("nats-server"); err == nil {
			found = p
			return
		}
		out, _ := exec.Command(proctest.GoTool(), "env", "GOBIN", "GOPATH").Output()
		// Two lines: GOBIN (often empty), then GOPATH (a list).
		for i, dir := range strings.Split(strings.TrimRight(string(out), "\n"), "\n") {
			for _, d := range filepath.SplitList(dir) {
				if d == "" {
					continue
				}
				if i == 1 {
					d = filepath.Join(d, "bin")
				}
				if p := filepath.Join(d, "nats-server"); isExecutable(p) {
					found = p
					return
				}
			}
		}
	})
	if found == "" {
		testenv.Missing(t, "nats-server not found: run scripts/install-tools.sh (go install github.com/nats-io/nats-server/v2@"+Version+") to run the cluster tests")
	}
	return found
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// ConfigPath is the NATS configuration deploy/cluster/compose.yaml mounts.
func ConfigPath() string {
	return filepath.Join(proctest.ModuleRoot(), "deploy", "cluster", "nats.conf")
}

// Server is one nats-server process.
type Server struct {
	Name    string
	Client  string // host:port of the client listener
	Monitor string // host:port of the monitoring listener
	Store   string // JetStream's store directory

	t    testing.TB
	env  []string
	argv []string
	proc *proctest.Proc
}

// URL returns the server's client URL.
func (s *Server) URL() string { return "nats://" + s.Client }

// start runs the server and waits until it is healthy.
func (s *Server) start() {
	s.t.Helper()
	s.proc = proctest.Start(s.t, s.Name, s.env, s.argv...)
}

// WaitHealthy waits until the server's /healthz answers 200: it takes
// clients and JetStream (in a cluster, once a meta leader is elected).
func (s *Server) WaitHealthy() {
	s.t.Helper()
	proctest.WaitHTTP(s.t, s.Monitor+"/healthz", s.Name+" healthy")
}

// Clients returns how many clients the server has now (its /varz
// connections), -1 when it does not answer.
func (s *Server) Clients() int {
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + s.Monitor + "/varz")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var v struct {
		Connections int `json:"connections"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return -1
	}
	return v.Connections
}

// Placement is what a server's /jsz says of one stream: which servers
// lead JetStream's meta layer (stream and consumer assignments) and the
// stream, and how many of the stream's consumers this server holds (an
// ordered consumer lives on one server).
type Placement struct {
	Meta, Stream string
	Consumers    int
}

// Placement returns what this server knows of stream; its fields are
// empty when it does not answer.
func (s *Server) Placement(stream string) Placement {
	var p Placement
	hc := &http.Client{Timeout: time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://" + s.Monitor + "/jsz?consumers=true")
	if err != nil {
		return p
	}
	defer resp.Body.Close()
	type cluster struct {
		Leader string `json:"leader"`
	}
	var v struct {
		Meta     cluster `json:"meta_cluster"`
		Accounts []struct {
			Streams []struct {
				Name      string            `json:"name"`
				Cluster   cluster           `json:"cluster"`
				Consumers []json.RawMessage `json:"consumer_detail"`
			} `json:"stream_detail"`
		} `json:"account_details"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return p
	}
	p.Meta = v.Meta.Leader
	for _, a := range v.Accounts {
		for _, st := range a.Streams {
			if st.Name == stream {
				p.Stream = st.Cluster.Leader
				p.Consumers += len(st.Consumers)
			}
		}
	}
	return p
}

// StepDownStream asks the leader of stream, through this server, to hand
// its leadership to another of the stream's servers.
func (s *Server) StepDownStream(t testing.TB, stream string) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatalf("failed to connect to %s: %v", s.Name, err)
	}
	defer nc.Close()
	msg, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil, 5*time.Second)
	if err != nil {
		t.Fatalf("step down of %s's leader: %v", stream, err)
	}
	var res struct {
		Success bool `json:"success"`
		Error   *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &res); err != nil || !res.Success {
		t.Fatalf("step down of %s's leader: %s", stream, msg.Data)
	}
}

// Kill ends the server with SIGKILL and returns when the signal was sent.
func (s *Server) Kill() time.Time {
	s.t.Helper()
	return s.proc.Kill(s.t)
}

// Restart starts the server again on the same ports and store and waits
// until it is healthy.
func (s *Server) Restart() {
	s.t.Helper()
	if !s.proc.Exited() {
		s.t.Fatalf("%s restarted while running", s.Name)
	}
	s.start()
	s.WaitHealthy()
}

// StartOne runs one nats-server with JetStream and waits until it is
// healthy.
func StartOne(t testing.TB) *Server {
	t.Helper()
	bin := Find(t)
	s := &Server{Name: "nats", Client: proctest.FreeAddr(t), Monitor: proctest.FreeAddr(t), Store: t.TempDir(), t: t, env: proctest.CleanEnv()}
	host, port, _ := net.SplitHostPort(s.Client) // both 127.0.0.1, from FreeAddr
	_, mport, _ := net.SplitHostPort(s.Monitor)
	s.argv = []string{bin, "-n", s.Name, "-a", host, "-p", port, "-m", mport, "-js", "-sd", s.Store}
	s.start()
	s.WaitHealthy()
	return s
}

// StartCluster runs a three-server NATS cluster with JetStream from
// ConfigPath, each server with the variables compose gives it, on free
// loopback ports, and waits until every server is healthy.
func StartCluster(t testing.TB) []*Server {
	t.Helper()
	bin := Find(t)
	routes := []string{proctest.FreeAddr(t), proctest.FreeAddr(t), proctest.FreeAddr(t)}
	var servers []*Server
	for i := range 3 {
		s := &Server{
			Name:    fmt.Sprintf("nats%d", i+1),
			Client:  proctest.FreeAddr(t),
			Monitor: proctest.FreeAddr(t),
			Store:   t.TempDir(),
			t:       t,
		}
		s.env = append(proctest.CleanEnv(), ClusterEnv(s.Name, s.Client, s.Monitor, routes[i], s.Store, routes)...)
		s.argv = []string{bin, "-c", ConfigPath()}
		s.start()
		servers = append(servers, s)
	}
	for _, s := range servers {
		s.WaitHealthy()
	}
	return servers
}

// ClusterEnv returns the variables ConfigPath reads, for the server name
// listening for clients on client, for monitoring on monitor, for the
// other servers' routes on route, with its store in store; routes are
// every server's route address.
func ClusterEnv(name, client, monitor, route, store string, routes []string) []string {
	env := []string{
		"NATS_SERVER_NAME=" + name,
		"NATS_CLIENT_LISTEN=" + client,
		"NATS_MONITOR_LISTEN=" + monitor,
		"NATS_CLUSTER_LISTEN=" + route,
		"NATS_STORE_DIR=" + store,
	}
	for i, r := range routes {
		env = append(env, fmt.Sprintf("NATS_ROUTE_%d=nats://%s", i+1, r))
	}
	return env
}

// URLs returns the servers' client URLs as a comma list, as
// SWITCHBOARD_NATS_URL takes them.
func URLs(servers []*Server) string {
	var urls []string
	for _, s := range servers {
		urls = append(urls, s.URL())
	}
	return strings.Join(urls, ",")
}
