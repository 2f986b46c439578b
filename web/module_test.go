package web_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/switchboard-rt/switchboard/internal/nodetest"
	"github.com/switchboard-rt/switchboard/internal/testenv"
	"github.com/switchboard-rt/switchboard/pkg/client"
	"github.com/switchboard-rt/switchboard/pkg/server"
)

// TestNodeServesLibrary fetches the library's three files from a running
// node, as pages and editors do.
func TestNodeServesLibrary(t *testing.T) {
	node := nodetest.Start(t, server.Config{})
	for path, want := range map[string]string{
		"/client.js":   "text/javascript; charset=utf-8",
		"/client.mjs":  "text/javascript; charset=utf-8",
		"/client.d.ts": "application/typescript; charset=utf-8",
	} {
		file, err := os.ReadFile(strings.TrimPrefix(path, "/"))
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + node.HTTPAddr() + path
		res, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != want || string(body) != string(file) {
			t.Errorf("GET %s: got %d, %q, %d bytes; want 200, %q, the %d bytes of %s",
				path, res.StatusCode, res.Header.Get("Content-Type"), len(body), want, len(file), path[1:])
		}
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("If-None-Match", res.Header.Get("ETag"))
		res, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusNotModified {
			t.Errorf("GET %s with its ETag: got %d; want 304", path, res.StatusCode)
		}
	}
}

// installPackage lays out the package as npm installs it, the files its
// package.json lists, in a new project's node_modules, and returns the
// project's directory.
func installPackage(t *testing.T) string {
	t.Helper()
	var pkg struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	}
	b, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &pkg); err != nil {
		t.Fatalf("package.json: %v", err)
	}
	project := t.TempDir()
	dir := filepath.Join(project, "node_modules", pkg.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range append(pkg.Files, "package.json") {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatalf("package.json lists %s: %v", f, err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return project
}

// nodeCommand returns node and the flags that give it a WebSocket global:
// Node.js 22 has one, 20 and 21 behind --experimental-websocket.
func nodeCommand(t *testing.T) (string, []string) {
	t.Helper()
	bin, err := exec.LookPath("node")
	if err != nil {
		testenv.Missing(t, "node is not on PATH: install Node.js (apt-get install nodejs npm)")
	}
	probe := "process.exit(typeof WebSocket === 'function' ? 0 : 1)"
	if exec.Command(bin, "-e", probe).Run() == nil {
		return bin, nil
	}
	if exec.Command(bin, "--experimental-websocket", "-e", probe).Run() == nil {
		return bin, []string{"--experimental-websocket"}
	}
	out, _ := exec.Command(bin, "--version").Output()
	t.Fatalf("node %s has no WebSocket, even with --experimental-websocket: the tests need Node.js 20.10 or later", strings.TrimSpace(string(out)))
	return "", nil
}

// nodeUse is what the scripts of TestModuleFormsInNode do once they have
// the package: connect, report on stdout as JSON lines, and close after
// the first Hello.
const nodeUse = `
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
const sb = connect(process.env.SB_URL, { minDelay: 50, maxDelay: 500 });
sb.onState((s) => out({ state: s }));
sb.onCount((n) => out({ count: n }));
sb.on("Hello", (data, msg) => { out({ data, id: msg.id, offset: msg.offset, channel: msg.channel }); sb.close(); });
sb.subscribe("news");
`

// TestModuleFormsInNode requires and imports the package, laid out as npm
// installs it, in Node.js, and runs each form against a real node: the
// same client.js behind both.
func TestModuleFormsInNode(t *testing.T) {
	bin, flags := nodeCommand(t)
	project := installPackage(t)
	node := nodetest.Start(t, server.Config{})
	api, err := client.Dial(node.GRPCAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer api.Close()

	for _, tc := range []struct {
		form, script, resolved string
		flags                  []string
	}{
		{"require", `const { connect } = require("switchboard-browser");
const Switchboard = require("switchboard-browser");
process.stdout.write(JSON.stringify({ resolved: require.resolve("switchboard-browser"),
  same: connect === Switchboard.connect && typeof Switchboard.Client === "function" }) + "\n");` + nodeUse,
			"client.js", nil},
		{"import", `import Switchboard, { connect, Client } from "switchboard-browser";
import { createRequire } from "node:module";
const cjs = createRequire(import.meta.url)("switchboard-browser");
process.stdout.write(JSON.stringify({ resolved: import.meta.resolve("switchboard-browser"),
  same: Switchboard === cjs && connect === cjs.connect && Client === cjs.Client }) + "\n");` + nodeUse,
			"client.mjs", []string{"--input-type=module"}},
	} {
		t.Run(tc.form, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append(append(append([]string{}, flags...), tc.flags...), "-e", tc.script)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Dir = project
			cmd.Env = append(os.Environ(), "SB_URL=ws://"+node.HTTPAddr()+"/ws")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			stdout, err := cmd.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			lines := make(chan map[string]any)
			go func() {
				defer close(lines)
				sc := bufio.NewScanner(stdout)
				for sc.Scan() {
					var m map[string]any
					if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
						m = map[string]any{"unparsed": sc.Text()}
					}
					lines <- m
				}
			}()
			next := func(what string, ok func(map[string]any) bool) map[string]any {
				t.Helper()
				for m := range lines {
					if ok(m) {
						return m
					}
				}
				cmd.Wait()
				t.Fatalf("node ended before %s:\n%s", what, stderr.String())
				return nil
			}

			first := next("its first line", func(map[string]any) bool { return true })
			if res, _ := first["resolved"].(string); filepath.Base(res) != tc.resolved || !strings.Contains(res, "node_modules") || first["same"] != true {
				t.Errorf("%s: got %v; want the installed %s, whose API is client.js's", tc.form, first, tc.resolved)
			}
			next("the state open", func(m map[string]any) bool { return m["state"] == "open" })
			deadline := time.Now().Add(10 * time.Second)
			for node.Hub().Count("news") != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("the node never saw the subscription; node said:\n%s", stderr.String())
				}
				time.Sleep(10 * time.Millisecond)
			}
			res, err := api.Emit(ctx, "Hello", map[string]string{"form": tc.form}, client.ToChannel("news"))
			if err != nil {
				t.Fatal(err)
			}
			got := next("the message", func(m map[string]any) bool { return m["id"] != nil })
			data, _ := got["data"].(map[string]any)
			if got["id"] != res.ID || got["offset"] != float64(res.Offset) || got["channel"] != "news" || data["form"] != tc.form {
				t.Errorf("message: got %v; want id %s, offset %d, channel news, data {form: %s}", got, res.ID, res.Offset, tc.form)
			}
			// close() leaves nothing behind: node exits on its own.
			for range lines {
			}
			if err := cmd.Wait(); err != nil {
				t.Errorf("node: %v\n%s", err, stderr.String())
			}
		})
	}
}
