package cluster

// No Docker engine runs in CI, so deploy/cluster/compose.yaml is checked
// here for what would break it silently: names and ports that must agree
// between services, the nginx template, nats.conf and the programs'
// environment variables; nginx checks the template rendered with
// compose's values, and nats-server checks nats.conf with each NATS
// service's environment.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/switchboard-rt/switchboard/internal/composetest"
	"github.com/switchboard-rt/switchboard/internal/natstest"
	"github.com/switchboard-rt/switchboard/internal/nginxtest"
	"github.com/switchboard-rt/switchboard/internal/proctest"
)

var (
	natsServices = []string{"nats1", "nats2", "nats3"}
	nodeServices = []string{"node1", "node2", "node3"}
)

func loadCompose(t *testing.T) *composetest.File {
	t.Helper()
	return composetest.Load(t, filepath.Join(proctest.ModuleRoot(), "deploy", "cluster", "compose.yaml"))
}

// port returns the port of a host:port setting, failing the test when it
// has none.
func port(t *testing.T, what, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(strings.TrimPrefix(addr, "nats://"))
	if err != nil {
		t.Fatalf("%s = %q: %v", what, addr, err)
	}
	return p
}

func TestComposeMatchesTemplateAndPrograms(t *testing.T) {
	bin := needBinaries(t)
	compose := loadCompose(t)
	for _, name := range slices.Concat(natsServices, nodeServices, []string{"web1", "web2", "nginx", "quotes"}) {
		if compose.Service(name) == nil {
			t.Errorf("compose.yaml lacks service %q", name)
		}
	}
	env := compose.Env
	ngx := env("nginx")

	// The template's placeholders are the nginx service's variables.
	tmpl, err := os.ReadFile(templatePath())
	if err != nil {
		t.Fatal(err)
	}
	placeholders := nginxtest.Placeholders(string(tmpl))
	for p := range placeholders {
		if _, ok := ngx[p]; !ok {
			t.Errorf("template placeholder ${%s} is not set in the nginx service's environment", p)
		}
	}
	for k := range ngx {
		if !placeholders[k] && !strings.HasPrefix(k, "NGINX_") {
			t.Errorf("nginx service sets %s, which the template does not use", k)
		}
	}
	if ngx["NGINX_ENVSUBST_OUTPUT_DIR"] != "/etc/nginx" {
		t.Errorf("NGINX_ENVSUBST_OUTPUT_DIR = %q; want /etc/nginx, so the template becomes the whole nginx.conf", ngx["NGINX_ENVSUBST_OUTPUT_DIR"])
	}
	if !slices.ContainsFunc(compose.Service("nginx").Get("volumes").Strings(), func(v string) bool {
		return strings.HasPrefix(v, "./nginx.conf.template:/etc/nginx/templates/nginx.conf.template")
	}) {
		t.Error("the nginx service does not mount ./nginx.conf.template into /etc/nginx/templates/")
	}

	// Each upstream names a service and the port it listens on.
	type upstream struct{ placeholder, service, listenVar string }
	ups := []upstream{{"WEB1", "web1", "LISTEN_ADDR"}, {"WEB2", "web2", "LISTEN_ADDR"}}
	for i, s := range nodeServices {
		ups = append(ups, upstream{fmt.Sprintf("NODE%d_HTTP", i+1), s, "SWITCHBOARD_HTTP_ADDR"}, upstream{fmt.Sprintf("NODE%d_GRPC", i+1), s, "SWITCHBOARD_GRPC_ADDR"})
	}
	for _, u := range ups {
		host, p, err := net.SplitHostPort(ngx[u.placeholder])
		if err != nil {
			t.Errorf("%s = %q: %v", u.placeholder, ngx[u.placeholder], err)
			continue
		}
		if host != u.service {
			t.Errorf("%s = %q; want service %q", u.placeholder, ngx[u.placeholder], u.service)
		}
		if listen := port(t, u.service+" "+u.listenVar, env(u.service)[u.listenVar]); listen != p {
			t.Errorf("%s = %q, but %s listens on %s", u.placeholder, ngx[u.placeholder], u.service, listen)
		}
	}
	// Every node in both upstreams, balanced by open connections, none a
	// backup.
	for _, name := range []string{"switchboard_http", "switchboard_grpc"} {
		block := regexp.MustCompile(`(?s)upstream ` + name + ` \{(.*?)\n\s*\}\n`).FindStringSubmatch(string(tmpl))
		if block == nil {
			t.Errorf("template has no upstream %s", name)
			continue
		}
		if !strings.Contains(block[1], "least_conn;") || strings.Contains(block[1], "backup") {
			t.Errorf("upstream %s: want least_conn and no backup:%s", name, block[1])
		}
		kind := strings.ToUpper(strings.TrimPrefix(name, "switchboard_"))
		for i := range nodeServices {
			if !strings.Contains(block[1], fmt.Sprintf("server ${NODE%d_%s} max_fails=0;", i+1, kind)) {
				t.Errorf("upstream %s lacks node%d with max_fails=0", name, i+1)
			}
		}
	}

	// NATS: every server from the one nats.conf, with the variables it
	// reads and nothing else; routes to every server's cluster port; the
	// store on a volume; a health check on the monitoring port.
	conf, err := os.ReadFile(natstest.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	confVars := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^[^#\n]*?\$([A-Z][A-Z0-9_]*)`).FindAllStringSubmatch(string(conf), -1) {
		confVars[m[1]] = true
	}
	for _, m := range regexp.MustCompile(`\$(NATS_ROUTE_\d)`).FindAllStringSubmatch(string(conf), -1) {
		confVars[m[1]] = true
	}
	var routes []string
	for _, s := range natsServices {
		routes = append(routes, "nats://"+s+":"+port(t, s+" NATS_CLUSTER_LISTEN", env(s)["NATS_CLUSTER_LISTEN"]))
	}
	var natsURLs []string
	for _, s := range natsServices {
		e, svc := env(s), compose.Service(s)
		for v := range confVars {
			if _, ok := e[v]; !ok {
				t.Errorf("%s does not set %s, which nats.conf reads", s, v)
			}
		}
		for k := range e {
			if !confVars[k] {
				t.Errorf("%s sets %s, which nats.conf does not read", s, k)
			}
		}
		if e["NATS_SERVER_NAME"] != s {
			t.Errorf("%s NATS_SERVER_NAME = %q; want the service's name", s, e["NATS_SERVER_NAME"])
		}
		var got []string
		for i := range routes {
			got = append(got, e[fmt.Sprintf("NATS_ROUTE_%d", i+1)])
		}
		if !slices.Equal(got, routes) {
			t.Errorf("%s routes %v; want every server's cluster address %v", s, got, routes)
		}
		image := svc.Get("image").S
		if !regexp.MustCompile(`^nats:\d+\.\d+`).MatchString(image) {
			t.Errorf("%s image %q; want nats pinned to a release (nats:2.10-alpine, say)", s, image)
		}
		cmd := svc.Get("command").S
		confIn := regexp.MustCompile(`"--config", "([^"]+)"`).FindStringSubmatch(cmd)
		volumes := svc.Get("volumes").Strings()
		if confIn == nil || !slices.Contains(volumes, "./nats.conf:"+confIn[1]+":ro") {
			t.Errorf("%s: command %s, volumes %v; want ./nats.conf mounted where --config names it", s, cmd, volumes)
		}
		if !slices.ContainsFunc(volumes, func(v string) bool {
			return strings.HasSuffix(v, ":"+e["NATS_STORE_DIR"]) && !strings.HasPrefix(v, ".")
		}) {
			t.Errorf("%s: the store %q is on no named volume (volumes %v)", s, e["NATS_STORE_DIR"], volumes)
		}
		if hc := svc.Get("healthcheck").Get("test").S; !strings.Contains(hc, ":"+port(t, s+" NATS_MONITOR_LISTEN", e["NATS_MONITOR_LISTEN"])+"/healthz") {
			t.Errorf("%s health check %s; want /healthz on the monitoring port", s, hc)
		}
		natsURLs = append(natsURLs, "nats://"+s+":"+port(t, s+" NATS_CLIENT_LISTEN", e["NATS_CLIENT_LISTEN"]))
		if compose.Root.Get("volumes").Get(s) == nil {
			t.Errorf("no top-level volume %q for %s's store", s, s)
		}

		// The real nats-server accepts nats.conf with this environment.
		checkEnv := append(proctest.CleanEnv(), "NATS_STORE_DIR="+t.TempDir())
		for k, v := range e {
			if k != "NATS_STORE_DIR" {
				checkEnv = append(checkEnv, k+"="+v)
			}
		}
		c := exec.Command(natstest.Find(t), "-t", "-c", natstest.ConfigPath())
		c.Env = checkEnv
		if out, err := c.CombinedOutput(); err != nil {
			t.Errorf("nats-server -t -c nats.conf with %s's environment: %v\n%s", s, err, out)
		}
	}

	// The nodes: every NATS server, the log on all three, one cluster,
	// each its own stable name, and all started once NATS serves.
	help, _ := exec.Command(bin.switchboard, "-h").CombinedOutput()
	nodeVars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\((SWITCHBOARD_[A-Z0-9_]+),`).FindAllSubmatch(help, -1) {
		nodeVars[string(m[1])] = true
	}
	if len(nodeVars) == 0 {
		t.Fatalf("found no variables in switchboard -h:\n%s", help)
	}
	token := env("node1")["SWITCHBOARD_API_TOKEN"]
	if !strings.Contains(token, "${SWITCHBOARD_API_TOKEN:-") {
		t.Errorf("node1 SWITCHBOARD_API_TOKEN = %q; want ${SWITCHBOARD_API_TOKEN:-<demo default>}", token)
	}
	secret := env("node1")["SWITCHBOARD_TOKEN_SECRET"]
	if secret != "${SWITCHBOARD_TOKEN_SECRET:-}" {
		t.Errorf("node1 SWITCHBOARD_TOKEN_SECRET = %q; want ${SWITCHBOARD_TOKEN_SECRET:-}", secret)
	}
	for _, s := range nodeServices {
		e := env(s)
		for k := range e {
			if !nodeVars[k] {
				t.Errorf("%s sets %s, which switchboard does not read (switchboard -h)", s, k)
			}
		}
		if got := strings.Split(e["SWITCHBOARD_NATS_URL"], ","); !slices.Equal(got, natsURLs) {
			t.Errorf("%s SWITCHBOARD_NATS_URL = %v; want every NATS server %v", s, got, natsURLs)
		}
		if e["SWITCHBOARD_NATS_REPLICAS"] != fmt.Sprint(len(natsServices)) {
			t.Errorf("%s SWITCHBOARD_NATS_REPLICAS = %q; want %d, the log on every NATS server", s, e["SWITCHBOARD_NATS_REPLICAS"], len(natsServices))
		}
		if e["SWITCHBOARD_NODE_NAME"] != s {
			t.Errorf("%s SWITCHBOARD_NODE_NAME = %q; want the service's name, stable across restarts", s, e["SWITCHBOARD_NODE_NAME"])
		}
		if e["SWITCHBOARD_CLUSTER_NAME"] != env("node1")["SWITCHBOARD_CLUSTER_NAME"] {
			t.Errorf("%s SWITCHBOARD_CLUSTER_NAME = %q; want node1's %q", s, e["SWITCHBOARD_CLUSTER_NAME"], env("node1")["SWITCHBOARD_CLUSTER_NAME"])
		}
		if e["SWITCHBOARD_API_TOKEN"] != token {
			t.Errorf("%s SWITCHBOARD_API_TOKEN = %q; want %q, as node1", s, e["SWITCHBOARD_API_TOKEN"], token)
		}
		if e["SWITCHBOARD_TOKEN_SECRET"] != secret {
			t.Errorf("%s SWITCHBOARD_TOKEN_SECRET = %q; want %q, as node1", s, e["SWITCHBOARD_TOKEN_SECRET"], secret)
		}
		for _, pair := range []string{"SWITCHBOARD_PRIMARY_ADDR", "SWITCHBOARD_STANDBY_WAIT"} {
			if _, ok := e[pair]; ok {
				t.Errorf("%s sets %s: a cluster member is neither a standby nor a primary", s, pair)
			}
		}
		for _, ns := range natsServices {
			if got := compose.Service(s).Get("depends_on").Get(ns).Get("condition").S; got != "service_healthy" {
				t.Errorf("%s depends on %s with condition %q; want service_healthy (JetStream serving)", s, ns, got)
			}
		}
	}

	// The web servers reach the nodes through nginx; pages reach nginx's
	// published port; every variable they get is one they read.
	webSrc, err := os.ReadFile(filepath.Join(proctest.ModuleRoot(), "examples", "webserver", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	published := compose.Service("nginx").Get("ports").Strings()
	for _, web := range []string{"web1", "web2"} {
		e := env(web)
		if want := "nginx:" + ngx["LISTEN_GRPC"]; e["SWITCHBOARD_ADDR"] != want {
			t.Errorf("%s SWITCHBOARD_ADDR = %q; want %q (through nginx, over every node)", web, e["SWITCHBOARD_ADDR"], want)
		}
		if urls := e["SWITCHBOARD_PUBLIC_URLS"]; !strings.Contains(urls, ":"+ngx["LISTEN_HTTP"]+"/ws") || !slices.ContainsFunc(published, func(p string) bool {
			return strings.HasSuffix(p, ":"+ngx["LISTEN_HTTP"])
		}) {
			t.Errorf("%s SWITCHBOARD_PUBLIC_URLS = %q; want /ws on nginx's published port %s (ports %v)", web, urls, ngx["LISTEN_HTTP"], published)
		}
		if e["SWITCHBOARD_API_TOKEN"] != token {
			t.Errorf("%s SWITCHBOARD_API_TOKEN = %q; want %q, as the nodes", web, e["SWITCHBOARD_API_TOKEN"], token)
		}
		if e["SWITCHBOARD_TOKEN_SECRET"] != secret {
			t.Errorf("%s SWITCHBOARD_TOKEN_SECRET = %q; want %q, as the nodes (they verify what it mints)", web, e["SWITCHBOARD_TOKEN_SECRET"], secret)
		}
		for k := range e {
			if !bytes.Contains(webSrc, []byte(`"`+k+`"`)) {
				t.Errorf("%s sets %s, which examples/webserver does not read", web, k)
			}
		}
	}

	// Build targets exist; everything but the trigger checks its health.
	dockerfile, err := os.ReadFile(filepath.Join(proctest.ModuleRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range compose.Services() {
		s := compose.Service(name)
		if b := s.Get("build"); b != nil {
			if b.Get("context").S != "../.." {
				t.Errorf("service %s builds from %q; want ../.., the repository", name, b.Get("context").S)
			}
			target := b.Get("target")
			if target == nil || !regexp.MustCompile(`(?m)^FROM \S+ AS `+regexp.QuoteMeta(target.S)+`$`).Match(dockerfile) {
				t.Errorf("service %s builds a target that is not a stage of the Dockerfile", name)
			}
		}
		if name != "quotes" && s.Get("healthcheck") == nil {
			t.Errorf("service %s has no healthcheck", name)
		}
	}

	// The Go rendering the tests use is the nginx image's; nginx accepts
	// the template rendered with compose's values, service names mapped to
	// loopback.
	nginxtest.CompareEnvsubst(t, string(tmpl), ngx)
	vars := map[string]string{}
	for k := range placeholders {
		v := ngx[k]
		if host, p, err := net.SplitHostPort(v); err == nil && compose.Service(host) != nil {
			v = "127.0.0.1:" + p
		}
		vars[k] = v
	}
	vars["ACCESS_LOG"] = "access.log"
	nginxtest.Check(t, bin.nginx, templatePath(), vars)
}

// TestTemplateRejectsMissingValues: rendering fails loudly rather than
// leaving a "${...}" for nginx to choke on.
func TestTemplateRejectsMissingValues(t *testing.T) {
	tmpl, err := os.ReadFile(templatePath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nginxtest.Render(string(tmpl), map[string]string{"WEB1": "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "NODE1_HTTP") {
		t.Errorf("rendering without NODE1_HTTP: got %v; want an error naming it", err)
	}
	for _, want := range []string{"proxy_next_upstream error timeout http_502 http_503 http_504", "proxy_set_header Host $http_host", "grpc_pass", "http2"} {
		if !strings.Contains(string(tmpl), want) {
			t.Errorf("template lacks %q", want)
		}
	}
}
