package failover

// No Docker engine runs in CI, so deploy/compose.yaml is checked here for
// what would break it silently: names and ports that must agree between
// services, the nginx template and the programs' environment variables;
// and nginx itself checks the template rendered with compose's values.

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
	"time"
)

func TestComposeMatchesTemplateAndPrograms(t *testing.T) {
	bin := needBinaries(t)
	compose := loadCompose(t)
	services := compose.get("services")
	if services == nil {
		t.Fatal("compose.yaml has no services")
	}
	for _, name := range []string{"nginx", "primary", "standby", "web1", "web2", "quotes"} {
		if services.get(name) == nil {
			t.Errorf("compose.yaml lacks service %q", name)
		}
	}
	env := func(service string) map[string]string {
		out := map[string]string{}
		if s := services.get(service); s != nil {
			if e := s.get("environment"); e != nil {
				for _, k := range e.keys {
					out[k] = e.m[k].s
				}
			}
		}
		return out
	}
	ngx := env("nginx")

	// Every placeholder of the template is set for nginx, and nothing else
	// but the image's own NGINX_ settings.
	tmpl, err := os.ReadFile(templatePath())
	if err != nil {
		t.Fatal(err)
	}
	placeholders := map[string]bool{}
	for _, m := range placeholderRE.FindAllStringSubmatch(string(tmpl), -1) {
		placeholders[m[1]] = true
	}
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
	for _, v := range services.get("nginx").get("volumes").list {
		mounted = mounted || strings.HasPrefix(v.s, "./nginx/nginx.conf.template:/etc/nginx/templates/nginx.conf.template")
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
	var published []string
	for _, p := range services.get("nginx").get("ports").list {
		published = append(published, p.s)
	}
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
	for _, s := range []string{"standby", "web1", "web2"} {
		if got := env(s)["SWITCHBOARD_API_TOKEN"]; got != token {
			t.Errorf("%s SWITCHBOARD_API_TOKEN = %q; want %q, as the primary", s, got, token)
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
	for _, name := range services.keys {
		s := services.get(name)
		if b := s.get("build"); b != nil {
			target := b.get("target")
			if target == nil || !regexp.MustCompile(`(?m)^FROM \S+ AS `+regexp.QuoteMeta(target.s)+`$`).Match(dockerfile) {
				t.Errorf("service %s builds a target that is not a stage of the Dockerfile", name)
			}
		}
		if name != "quotes" && s.get("healthcheck") == nil {
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

	// The Go rendering the tests use is the nginx image's: envsubst told
	// the names of the variables in the environment, so nginx's own
	// $variables stay.
	if envsubst, err := exec.LookPath("envsubst"); err == nil {
		containerEnv := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "HOSTNAME=nginx"}
		for k, v := range ngx {
			containerEnv = append(containerEnv, k+"="+v)
		}
		var format []string
		for _, kv := range containerEnv {
			format = append(format, "${"+kv[:strings.IndexByte(kv, '=')]+"}")
		}
		cmd := exec.Command(envsubst, strings.Join(format, " "))
		cmd.Env = containerEnv
		cmd.Stdin = bytes.NewReader(tmpl)
		byImage, err := cmd.Output()
		if err != nil {
			t.Fatalf("envsubst: %v", err)
		}
		byTest, err := renderTemplate(string(tmpl), ngx)
		if err != nil {
			t.Fatal(err)
		}
		if string(byImage) != byTest {
			t.Errorf("envsubst and the tests render the template differently:\n%s", firstDiff(string(byImage), byTest))
		}
	} else {
		t.Log("no envsubst (gettext-base): the rendering is not compared with the image's")
	}

	// nginx accepts the template rendered with compose's values (service
	// names mapped to loopback: there is no Docker DNS here).
	vars := map[string]string{}
	for k := range placeholders {
		v := ngx[k]
		if host, port, err := net.SplitHostPort(v); err == nil && services.get(host) != nil {
			v = "127.0.0.1:" + port
		}
		vars[k] = v
	}
	vars["ACCESS_LOG"] = "access.log" // /dev/stdout is not nobody's to open here
	nginxTest(t, bin, vars)
}

// TestTemplateRejectsMissingValues: rendering fails loudly rather than
// leaving a "${...}" for nginx to choke on.
func TestTemplateRejectsMissingValues(t *testing.T) {
	tmpl, err := os.ReadFile(templatePath())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := renderTemplate(string(tmpl), map[string]string{"WEB1": "127.0.0.1:1"}); err == nil || !strings.Contains(err.Error(), "PRIMARY_HTTP") {
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

// nginxTest runs nginx -t on the template rendered with vars.
func nginxTest(t *testing.T, bin binaries, vars map[string]string) {
	t.Helper()
	prefix := nginxPrefix(t, vars)
	argv := nginxArgv(bin, prefix, "-t")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	t.Logf("nginx -t: %s", bytes.TrimSpace(out))
}

// yamlNode is a node of the small YAML subset compose.yaml keeps to:
// block mappings, block lists of scalars, scalars (flow collections are
// kept as their text).
type yamlNode struct {
	m    map[string]*yamlNode
	keys []string
	list []*yamlNode
	s    string
}

func (n *yamlNode) get(key string) *yamlNode {
	if n == nil || n.m == nil {
		return nil
	}
	return n.m[key]
}

func loadCompose(t *testing.T) *yamlNode {
	t.Helper()
	return loadComposeFile(t, "compose.yaml")
}

// loadComposeFile parses the compose file deploy/name.
func loadComposeFile(t *testing.T, name string) *yamlNode {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(moduleRoot(), "deploy", name))
	if err != nil {
		t.Fatal(err)
	}
	var lines []yamlLine
	for i, raw := range strings.Split(string(b), "\n") {
		text := stripComment(raw)
		if strings.TrimSpace(text) == "" {
			continue
		}
		indent := len(text) - len(strings.TrimLeft(text, " "))
		if strings.Contains(text[:indent], "\t") {
			t.Fatalf("%s:%d: tab in indentation", name, i+1)
		}
		lines = append(lines, yamlLine{i + 1, indent, strings.TrimSpace(text)})
	}
	p := &yamlParser{lines: lines}
	n, err := p.block(0)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if p.i != len(lines) {
		t.Fatalf("%s:%d: unexpected indentation", name, lines[p.i].no)
	}
	return n
}

type yamlLine struct {
	no, indent int
	text       string
}

type yamlParser struct {
	lines []yamlLine
	i     int
}

// block parses the lines indented exactly indent as one mapping or list.
func (p *yamlParser) block(indent int) (*yamlNode, error) {
	n := &yamlNode{}
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.indent < indent {
			break
		}
		if l.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", l.no)
		}
		if item, ok := strings.CutPrefix(l.text, "- "); ok {
			if n.m != nil {
				return nil, fmt.Errorf("line %d: list item in a mapping", l.no)
			}
			n.list = append(n.list, &yamlNode{s: unquote(item)})
			p.i++
			continue
		}
		key, val, ok := strings.Cut(l.text, ":")
		if !ok || n.list != nil {
			return nil, fmt.Errorf("line %d: want key: value", l.no)
		}
		key = unquote(strings.TrimSpace(key))
		if n.m == nil {
			n.m = map[string]*yamlNode{}
		}
		if _, dup := n.m[key]; dup {
			return nil, fmt.Errorf("line %d: duplicate key %q", l.no, key)
		}
		p.i++
		var child *yamlNode
		if val = strings.TrimSpace(val); val != "" {
			child = &yamlNode{s: unquote(val)}
		} else if p.i < len(p.lines) && p.lines[p.i].indent > indent {
			var err error
			if child, err = p.block(p.lines[p.i].indent); err != nil {
				return nil, err
			}
		} else {
			child = &yamlNode{}
		}
		n.m[key] = child
		n.keys = append(n.keys, key)
	}
	return n, nil
}

// stripComment removes a " #" comment outside quotes.
func stripComment(line string) string {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '#' && (i == 0 || line[i-1] == ' '):
			return line[:i]
		}
	}
	return line
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

// firstDiff shows the first line where a and b differ.
func firstDiff(a, b string) string {
	al, bl := strings.Split(a, "\n"), strings.Split(b, "\n")
	for i := range min(len(al), len(bl)) {
		if al[i] != bl[i] {
			return fmt.Sprintf("line %d:\n  envsubst: %s\n  tests:    %s", i+1, al[i], bl[i])
		}
	}
	return fmt.Sprintf("lengths differ: %d and %d lines", len(al), len(bl))
}
