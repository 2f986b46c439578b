package failover

// TLS terminated at nginx (deploy/nginx/tls.conf.template, mounted by
// deploy/compose.tls.yaml): the snippet rendered with the main template
// and run through real nginx, with a real node and web server behind it.

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"google.golang.org/grpc/credentials"

	"github.com/switchboard-rt/switchboard/internal/composetest"
	"github.com/switchboard-rt/switchboard/internal/nginxtest"
	"github.com/switchboard-rt/switchboard/internal/proctest"
	"github.com/switchboard-rt/switchboard/internal/testenv"
	"github.com/switchboard-rt/switchboard/pkg/certs/certstest"
	"github.com/switchboard-rt/switchboard/pkg/client"
)

// tlsTemplatePath is the TLS snippet compose.tls.yaml mounts.
func tlsTemplatePath() string {
	return filepath.Join(moduleRoot(), "deploy", "nginx", "tls.conf.template")
}

// tlsDeployment is nginx with TLS in front of one node and one web server.
type tlsDeployment struct {
	https, grpcs   string // nginx's TLS ports
	http, grpc     string // nginx's plain-text ports
	roots          *x509.CertPool
	caFile         string
	nodeHTTP, node string
}

func startTLSDeployment(t *testing.T) *tlsDeployment {
	t.Helper()
	bin := needBinaries(t)
	d := &tlsDeployment{
		https: proctest.FreeAddr(t), grpcs: proctest.FreeAddr(t), http: proctest.FreeAddr(t), grpc: proctest.FreeAddr(t),
		nodeHTTP: proctest.FreeAddr(t), node: proctest.FreeAddr(t),
	}
	web := proctest.FreeAddr(t)
	proctest.Start(t, "node", append(proctest.CleanEnv(),
		"SWITCHBOARD_HTTP_ADDR="+d.nodeHTTP, "SWITCHBOARD_GRPC_ADDR="+d.node,
		"SWITCHBOARD_API_TOKEN="+testToken, "SWITCHBOARD_LOG_LEVEL=warn",
		"SWITCHBOARD_TRUSTED_PROXIES=127.0.0.1/32"), bin.switchboard)
	waitOK(t, "http://"+d.nodeHTTP+"/readyz", nil)
	proctest.Start(t, "web", append(proctest.CleanEnv(),
		"LISTEN_ADDR="+web, "SWITCHBOARD_ADDR="+d.grpc, "SWITCHBOARD_API_TOKEN="+testToken,
		"SWITCHBOARD_PUBLIC_URLS=wss://"+d.https+"/ws"), bin.webserver)
	waitOK(t, "http://"+web+"/healthz", nil)

	prefix := nginxtest.Prefix(t, templatePath(), map[string]string{
		"LISTEN_HTTP": d.http, "LISTEN_GRPC": d.grpc,
		"PRIMARY_HTTP": d.nodeHTTP, "STANDBY_HTTP": proctest.FreeAddr(t),
		"PRIMARY_GRPC": d.node, "STANDBY_GRPC": proctest.FreeAddr(t),
		"WEB1": web, "WEB2": web,
		"ACCESS_LOG": "access.log",
	})
	ca := certstest.NewCA(t)
	d.roots = ca.Pool()
	d.caFile = ca.WriteCA(t, t.TempDir())
	ca.Server(t).Write(t, filepath.Join(prefix, "cert.pem"), filepath.Join(prefix, "key.pem"))
	writeTLSConf(t, prefix, map[string]string{
		"LISTEN_HTTPS": d.https, "LISTEN_GRPCS": d.grpcs,
		"TLS_CERT": "cert.pem", "TLS_KEY": "key.pem",
	})
	nginxtest.Start(t, bin.nginx, prefix)
	waitOK(t, "http://"+d.http+"/nginx-healthz", nil)
	waitOK(t, "https://"+d.https+"/client.js", d.roots)
	return d
}

// writeTLSConf renders the TLS snippet with vars into prefix/tls.conf, as
// the nginx image renders the mounted template beside nginx.conf, and lets
// nginx, running as nobody, read it and the key.
func writeTLSConf(t *testing.T, prefix string, vars map[string]string) {
	t.Helper()
	tmpl, err := os.ReadFile(tlsTemplatePath())
	if err != nil {
		t.Fatal(err)
	}
	conf, err := nginxtest.Render(string(tmpl), vars)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(prefix, "tls.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	nginxtest.GiveToNginx(t, prefix, "tls.conf", "cert.pem", "key.pem")
}

// waitOK polls url until it answers 200, trusting roots for https.
func waitOK(t *testing.T, url string, roots *x509.CertPool) {
	t.Helper()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	defer hc.CloseIdleConnections()
	var last string
	for deadline := time.Now().Add(waitTimeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		resp, err := hc.Get(url)
		if err != nil {
			last = err.Error()
			continue
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			return
		}
		last = resp.Status
	}
	t.Fatalf("GET %s never answered 200 (last: %s)", url, last)
}

func TestTLSAtNginx(t *testing.T) {
	t.Parallel()
	d := startTLSDeployment(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	tlsConfig := &tls.Config{RootCAs: d.roots}
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer hc.CloseIdleConnections()

	// The page and the browser library over https, from the web server and
	// the node behind nginx.
	for path, want := range map[string]string{"/": "wss://" + d.https + "/ws", "/client.js": "Switchboard"} {
		resp, err := hc.Get("https://" + d.https + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET https://%s%s: got %s, %d bytes; want 200 with %q", d.https, path, resp.Status, len(body), want)
		}
	}

	// A browser on wss://, its page on the same https origin.
	ws, _, err := websocket.Dial(ctx, "wss://"+d.https+"/ws", &websocket.DialOptions{
		HTTPClient: hc,
		HTTPHeader: http.Header{"Origin": {"https://" + d.https}},
	})
	if err != nil {
		t.Fatalf("wss:// through nginx: %v", err)
	}
	defer ws.CloseNow()
	next := func() map[string]any {
		t.Helper()
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("reading a frame: %v", err)
		}
		var f map[string]any
		if err := json.Unmarshal(b, &f); err != nil {
			t.Fatalf("frame %s: %v", b, err)
		}
		return f
	}
	// The count arrives right after the upgrade (behind any frame the
	// protocol puts first).
	for f := next(); f["type"] != "count"; f = next() {
		if f["type"] == "message" {
			t.Fatalf("got %v before the count", f)
		}
	}

	// A web server on gRPC over TLS, with the token.
	sb, err := client.Dial(d.grpcs, client.WithToken(testToken), client.WithTransportCredentials(credentials.NewTLS(tlsConfig)))
	if err != nil {
		t.Fatal(err)
	}
	defer sb.Close()
	if n, err := sb.Count(ctx, ""); err != nil || n != 1 {
		t.Fatalf("Count over TLS through nginx: got %d, %v; want 1, nil", n, err)
	}
	res, err := sb.Emit(ctx, "ShowMessage", map[string]string{"text": "over TLS"})
	if err != nil || res.Recipients != 1 {
		t.Fatalf("Emit over TLS through nginx: got %+v, %v; want 1 recipient", res, err)
	}
	for {
		f := next()
		if f["type"] == "message" {
			if f["id"] != res.ID || f["data"].(map[string]any)["text"] != "over TLS" {
				t.Errorf("message: got %v; want id %s, text %q", f, res.ID, "over TLS")
			}
			break
		}
	}

	// Plain text on a TLS port is refused, by nginx for HTTP and by the
	// handshake for gRPC.
	conn, err := net.Dial("tcp", d.https)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /client.js HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", d.https)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	conn.Close()
	if err != nil || resp.StatusCode != http.StatusBadRequest {
		t.Errorf("plain HTTP to the https port: got %v, %v; want 400", resp, err)
	}
	plain, err := client.Dial(d.grpcs, client.WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if _, err := plain.Count(short, ""); err == nil {
		t.Error("plain-text gRPC to the TLS gRPC port: got an answer; want a failure")
	}
}

// TestREADMEGrpcurlThroughNginx runs the grpcurl calls deploy/README.md
// shows, through nginx: plain text on the private port, TLS on the other.
func TestREADMEGrpcurlThroughNginx(t *testing.T) {
	t.Parallel()
	grpcurl, err := exec.LookPath("grpcurl")
	if err != nil {
		gopath, _ := exec.Command("go", "env", "GOPATH").Output()
		grpcurl = filepath.Join(strings.TrimSpace(string(gopath)), "bin", "grpcurl")
		if _, err := os.Stat(grpcurl); err != nil {
			testenv.Missing(t, "grpcurl not found: run `make tools`")
		}
	}
	d := startTLSDeployment(t)
	auth := "authorization: Bearer " + testToken
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"list, plain text", []string{"-plaintext", d.grpc, "list"}, "switchboard.v1.SwitchboardService"},
		{"emit, plain text", []string{"-plaintext", "-H", auth, "-d", `{"event":"ShowMessage","data":{"text":"hi"}}`,
			d.grpc, "switchboard.v1.SwitchboardService/EmitMessage"}, `"id"`},
		{"count, TLS", []string{"-cacert", d.caFile, "-H", auth, "-emit-defaults", d.grpcs,
			"switchboard.v1.SwitchboardService/GetOnlineCount"}, `"connections": "0"`},
		{"emit, TLS", []string{"-cacert", d.caFile, "-H", auth, "-d", `{"event":"ShowMessage","data":{"text":"hi"}}`,
			d.grpcs, "switchboard.v1.SwitchboardService/EmitMessage"}, `"id"`},
		{"health, TLS, no token", []string{"-cacert", d.caFile, d.grpcs, "grpc.health.v1.Health/Check"}, `"SERVING"`},
	} {
		out, err := exec.Command(grpcurl, tc.args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("%s: grpcurl %s: got %v\n%s\nwant %s", tc.name, strings.Join(tc.args, " "), err, out, tc.want)
		}
	}
	out, err := exec.Command(grpcurl, "-cacert", d.caFile, d.grpcs, "switchboard.v1.SwitchboardService/GetOnlineCount").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "Unauthenticated") {
		t.Errorf("grpcurl without the token: got %v\n%s\nwant Unauthenticated", err, out)
	}
}

// TestComposeTLSOverride checks deploy/compose.tls.yaml against the TLS
// snippet: every placeholder set, the snippet and the certificates
// mounted, the ports published, the pages pointed at wss://; and runs
// nginx -t on both templates rendered with compose's values.
func TestComposeTLSOverride(t *testing.T) {
	bin := needBinaries(t)
	override := composetest.Load(t, filepath.Join(moduleRoot(), "deploy", "compose.tls.yaml"))
	ngxNode := override.Service("nginx")
	if ngxNode == nil {
		t.Fatal("compose.tls.yaml has no nginx service")
	}
	ngx := override.Env("nginx")
	tmpl, err := os.ReadFile(tlsTemplatePath())
	if err != nil {
		t.Fatal(err)
	}
	placeholders := nginxtest.Placeholders(string(tmpl))
	for p := range placeholders {
		if _, ok := ngx[p]; !ok {
			t.Errorf("TLS placeholder ${%s} is not set in compose.tls.yaml's nginx environment", p)
		}
	}
	for k := range ngx {
		if !placeholders[k] {
			t.Errorf("compose.tls.yaml sets %s for nginx, which tls.conf.template does not use", k)
		}
	}
	volumes, ports := ngxNode.Get("volumes").Strings(), ngxNode.Get("ports").Strings()
	if !containsPrefix(volumes, "./nginx/tls.conf.template:/etc/nginx/templates/tls.conf.template") {
		t.Errorf("compose.tls.yaml does not mount ./nginx/tls.conf.template into /etc/nginx/templates/ (volumes %v)", volumes)
	}
	for _, f := range []string{"TLS_CERT", "TLS_KEY"} {
		if !containsFunc(volumes, func(v string) bool {
			parts := strings.Split(v, ":")
			return len(parts) >= 2 && strings.HasPrefix(ngx[f], strings.TrimSuffix(parts[1], "/")+"/")
		}) {
			t.Errorf("%s = %q is in no mounted directory (volumes %v)", f, ngx[f], volumes)
		}
	}
	for _, p := range []string{"LISTEN_HTTPS", "LISTEN_GRPCS"} {
		if !containsFunc(ports, func(s string) bool { return strings.HasSuffix(s, ":"+ngx[p]) }) {
			t.Errorf("%s %s is not published (ports %v)", p, ngx[p], ports)
		}
	}
	for _, web := range []string{"web1", "web2"} {
		urls := override.Env(web)["SWITCHBOARD_PUBLIC_URLS"]
		if !strings.Contains(urls, "wss://") || !strings.Contains(urls, ":"+ngx["LISTEN_HTTPS"]+"/ws") {
			t.Errorf("%s SWITCHBOARD_PUBLIC_URLS in compose.tls.yaml: want wss:// on port %s", web, ngx["LISTEN_HTTPS"])
		}
	}

	// nginx -t, with compose's values (service names mapped to loopback,
	// as TestComposeMatchesTemplateAndPrograms does) and test
	// certificates at the paths.
	vars := loopbackVars(loadCompose(t))
	prefix := nginxtest.Prefix(t, templatePath(), vars)
	certstest.NewCA(t).Server(t).Write(t, filepath.Join(prefix, "cert.pem"), filepath.Join(prefix, "key.pem"))
	tlsVars := map[string]string{"TLS_CERT": "cert.pem", "TLS_KEY": "key.pem"}
	for k, v := range ngx {
		if _, ok := tlsVars[k]; !ok {
			tlsVars[k] = v
		}
	}
	writeTLSConf(t, prefix, tlsVars)
	argv := nginxtest.Argv(bin.nginx, prefix, "-t")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t with the TLS snippet: %v\n%s", err, out)
	}
}

func containsPrefix(list []string, prefix string) bool {
	return containsFunc(list, func(s string) bool { return strings.HasPrefix(s, prefix) })
}

func containsFunc(list []string, f func(string) bool) bool {
	for _, s := range list {
		if f(s) {
			return true
		}
	}
	return false
}
