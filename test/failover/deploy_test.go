package failover

// No Docker engine runs in CI, so deploy/compose.yaml is checked here for
// what would break it silently: names and ports that must agree between
// services, the nginx template and the programs' environment variables;
// and nginx itself checks the template rendered with compose's values.

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/composetest"
	"github.com/switchboard-rt/switchboard/internal/nginxtest"
)

func TestComposeMatchesTemplateAndPrograms(t *testing.T) {
	bin := needBinaries(t)
	compose := loadCompose(t)
	for _, name := range []string{"nginx", "primary", "standby", "web1", "web2", "quotes"} {
		if compose.Service(name) == nil {
			t.Errorf("compose.yaml lacks service %q", name)
		}
	}
	env := compose.Env
	ngx := env("nginx")

	// Every placeholder of the template is set for nginx, and nothing else
	// but the image's own NGINX_ settings.
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
	mounted := false
	for _, v := range compose.Service("nginx").Get("volumes").Strings() {
		mounted = mounted || strings.HasPrefix(v, "./nginx/nginx.conf.template:/etc/nginx/templates/nginx.conf.template")
	}
	if !mounted {
		t.Error("the nginx service does not mount ./nginx/nginx.conf.template into /etc/nginx/templates/")
	}

	// Each upstream names a service and the port that service listens on.
	upstreams := []struct{ placeholder, service, listenVar string }{
		{"PRIMARY_HTTP", "primary", "SWITCHBOARD_HTTP_ADDR"},
		{"PRIMARY_GRPC", "primary", "SWITCHBOARD_GRPC_ADDR"},
		{"STANDBY_HTTP", "standby", "SWITCHBOARD_HTTP_ADDR"},
		{"STANDBY_GRPC", "standby", "SWITCHBOARD_GRPC_ADDR"},
		{"WEB1", "web1", "LISTEN_ADDR"},
		{"WEB2", "web2", "LISTEN_ADDR"},
	}
	for _, u := range upstreams {
		host, port, err := net.SplitHostPort(ngx[u.placeholder])
		if err != nil {
			t.Errorf("%s = %q: %v", u.placeholder, ngx[u.placeholder], err)
			continue
		}
		if host != u.service {
			t.Errorf("%s = %q; want service %q", u.placeholder, ngx[u.placeholder], u.service)
		}
		_, listen, _ := net.SplitHostPort(env(u.service)[u.listenVar])
		if listen != port {
			t.Errorf("%s = %q, but %s listens on %s=%q", u.placeholder, ngx[u.placeholder], u.service, u.listenVar, env(u.service)[u.listenVar])
		}
	}

	// Fail-over wiring: the standby watches the primary nginx fails over
	// from; the web servers reach the nodes through nginx; pages reach
	// nginx's published HTTP port.
	if got, want := env("standby")["SWITCHBOARD_PRIMARY_ADDR"], ngx["PRIMARY_GRPC"]; got != want {
		t.Errorf("standby SWITCHBOARD_PRIMARY_ADDR = %q; want the primary's gRPC address %q", got, want)
	}
	if d, err := time.ParseDuration(env("primary")["SWITCHBOARD_STANDBY_WAIT"]); err != nil || d <= 0 {
		t.Errorf("primary SWITCHBOARD_STANDBY_WAIT = %q; want a positive duration, so that a primary back from a crash takes the standby's log", env("primary")["SWITCHBOARD_STANDBY_WAIT"])
	}
	if _, ok := env("standby")["SWITCHBOARD_STANDBY_WAIT"]; ok {
		t.Error("the standby sets SWITCHBOARD_STANDBY_WAIT: only a primary waits for a standby")
	}
	if _, ok := env("primary")["SWITCHBOARD_PRIMARY_ADDR"]; ok {
		t.Error("the primary sets SWITCHBOARD_PRIMARY_ADDR: it would be a standby")
	}
	published := compose.Service("nginx").Get("ports").Strings()
	for _, web := range []string{"web1", "web2"} {
		e := env(web)
		if want := "nginx:" + ngx["LISTEN_GRPC"]; e["SWITCHBOARD_ADDR"] != want {
			t.Errorf("%s SWITCHBOARD_ADDR = %q; want %q (through nginx, so emits fail over)", web, e["SWITCHBOARD_ADDR"], want)
		}
		urls := e["SWITCHBOARD_PUBLIC_URLS"]
		if !strings.Contains(urls, ":"+ngx["LISTEN_HTTP"]+"/ws") || !slices.ContainsFunc(published, func(p string) bool {
			return strings.HasSuffix(p, ":"+ngx["LISTEN_HTTP"])
		}) {
			t.Errorf("%s SWITCHBOARD_PUBLIC_URLS = %q; want /ws on nginx's published port %s (ports %v)", web, urls, ngx["LISTEN_HTTP"], published)
		}
	}

	// One token for everyone, with a default so the demo starts.
	token := env("primary")["SWITCHBOARD_API_TOKEN"]
	if !strings.Contains(token, "${SWITCHBOARD_API_TOKEN:-") {
		t.Errorf("primary SWITCHBOARD_API_TOKEN = %q; want ${SWITCHBOARD_API_TOKEN:-<demo default>}", token)
	}
	// One identity-token secret for the nodes that verify tokens and the
	// web servers that mint them, unset unless the operator sets one.
	secret := env("primary")["SWITCHBOARD_TOKEN_SECRET"]
	if secret != "${SWITCHBOARD_TOKEN_SECRET:-}" {
		t.Errorf("primary SWITCHBOARD_TOKEN_SECRET = %q; want ${SWITCHBOARD_TOKEN_SECRET:-}", secret)
	}
	for _, s := range []string{"standby", "web1", "web2"} {
		if got := env(s)["SWITCHBOARD_API_TOKEN"]; got != token {
			t.Errorf("%s SWITCHBOARD_API_TOKEN = %q; want %q, as the primary", s, got, token)
		}
		if got := env(s)["SWITCHBOARD_TOKEN_SECRET"]; got != secret {
			t.Errorf("%s SWITCHBOARD_TOKEN_SECRET = %q; want %q, as the primary", s, got, secret)
		}
	}

	// Every variable a service sets is one its program reads.
	help, _ := exec.Command(bin.switchboard, "-h").CombinedOutput()
	nodeVars := map[string]bool{}
	for _, m := range regexp.MustCompile(`\((SWITCHBOARD_[A-Z0-9_]+),`).FindAllSubmatch(help, -1) {
		nodeVars[string(m[1])] = true
	}
	if len(nodeVars) == 0 {
		t.Fatalf("found no variables in switchboard -h:\n%s", help)
	}
	for _, s := range []string{"primary", "standby"} {
		for k := range env(s) {
			if !nodeVars[k] {
				t.Errorf("%s sets %s, which switchboard does not read (switchboard -h)", s, k)
			}
		}
	}
	webSrc, err := os.ReadFile(filepath.Join(moduleRoot(), "examples", "webserver", "main.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"web1", "web2"} {
		for k := range env(s) {
			if !bytes.Contains(webSrc, []byte(`"`+k+`"`)) {
				t.Errorf("%s sets %s, which examples/webserver does not read", s, k)
			}
		}
	}

	// Build targets exist; the images run as non-root and check their
	// health.
	dockerfile, err := os.ReadFile(filepath.Join(moduleRoot(), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range compose.Services() {
		s := compose.Service(name)
		if b := s.Get("build"); b != nil {
			target := b.Get("target")
			if target == nil || !regexp.MustCompile(`(?m)^FROM \S+ AS `+regexp.QuoteMeta(target.S)+`$`).Match(dockerfile) {
				t.Errorf("service %s builds a target that is not a stage of the Dockerfile", name)
			}
		}
		if name != "quotes" && s.Get("healthcheck") == nil {
			t.Errorf("service %s has no healthcheck", name)
		}
	}
	for _, want := range []string{`CMD ["/switchboard", "healthcheck"]`, "USER nonroot:nonroot", "FROM gcr.io/distroless/static"} {
		if !bytes.Contains(dockerfile, []byte(want)) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !strings.Contains(string(dockerfile[bytes.LastIndex(dockerfile, []byte("\nFROM ")):]), "AS switchboard") {
		t.Error("the Dockerfile's last stage is not the node: `docker build .` must give a node image")
	}

	// The Go rendering the tests use is the nginx image's; nginx accepts
	// the template rendered with compose's values.
	nginxtest.CompareEnvsubst(t, string(tmpl), ngx)
	vars := loopbackVars(compose)
	for k := range vars {
		if !placeholders[k] {
			delete(vars, k)
		}
	}
	nginxtest.Check(t, bin.nginx, templatePath(), vars)
}

// TestTemplateRejectsMissingValues: rendering fails loudly rather than
// leaving a "${...}" for nginx to choke on.
func TestTemplateRejectsMissingValues(t *testing.T) {
	tmpl, err := os.ReadFile(templatePath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nginxtest.Render(string(tmpl), map[string]string{"WEB1": "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "PRIMARY_HTTP") {
		t.Errorf("rendering without PRIMARY_HTTP: got %v; want an error naming it", err)
	}
	for _, want := range []string{"max_fails=0", "backup", "proxy_next_upstream error timeout http_502 http_503 http_504", "proxy_set_header Host $http_host", "grpc_pass", "http2"} {
		if !strings.Contains(string(tmpl), want) {
			t.Errorf("template lacks %q", want)
		}
	}
	if strings.Contains(string(tmpl), "Host $host;") {
		t.Error("template passes Host $host: the WebSocket origin check needs $http_host (with the port)")
	}
}

func loadCompose(t *testing.T) *composetest.File {
	t.Helper()
	return composetest.Load(t, filepath.Join(moduleRoot(), "deploy", "compose.yaml"))
}

// loopbackVars is the nginx service's environment with service names
// mapped to loopback (there is no Docker DNS here) and the access log in
// a file (/dev/stdout is not nobody's to open here).
func loopbackVars(compose *composetest.File) map[string]string {
	vars := map[string]string{}
	for k, v := range compose.Env("nginx") {
		if host, port, err := net.SplitHostPort(v); err == nil && compose.Service(host) != nil {
			v = "127.0.0.1:" + port
		}
		vars[k] = v
	}
	vars["ACCESS_LOG"] = "access.log"
	return vars
}
