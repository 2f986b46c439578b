// Package nginxtest runs real nginx in tests from the project's own
// templates (deploy/nginx/, deploy/cluster/): rendered as the official
// nginx image renders them, into a prefix directory of its own, in the
// foreground, as nobody when the tests run as root.
package nginxtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/switchboard-rt/switchboard/internal/proctest"
	"github.com/switchboard-rt/switchboard/internal/testenv"
)

// Find returns the path of nginx; missing, it skips the test, or fails it
// where tests must not skip (see internal/testenv).
func Find(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	for _, p := range []string{"/usr/sbin/nginx", "/usr/local/sbin/nginx"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	testenv.Missing(t, "nginx not found: install nginx (apt-get install nginx) to run the deployment tests")
	return ""
}

// PlaceholderRE matches a template's ${NAME}.
var PlaceholderRE = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// Placeholders returns the names of the placeholders of tmpl.
func Placeholders(tmpl string) map[string]bool {
	out := map[string]bool{}
	for _, m := range PlaceholderRE.FindAllStringSubmatch(tmpl, -1) {
		out[m[1]] = true
	}
	return out
}

// Render replaces ${NAME} for every name in vars, as the nginx image's
// envsubst step does, and fails on a placeholder vars lacks.
func Render(tmpl string, vars map[string]string) (string, error) {
	var missing []string
	out := PlaceholderRE.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := PlaceholderRE.FindStringSubmatch(m)[1]
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return v
	})
	if len(missing) > 0 {
		return "", fmt.Errorf("template placeholders without a value: %v", missing)
	}
	return out, nil
}

// Prefix renders the template at templatePath with vars into nginx.conf
// in a fresh prefix directory that nginx, running as nobody when the test
// runs as root, can write; it is removed when the test ends.
func Prefix(t testing.TB, templatePath string, vars map[string]string) string {
	t.Helper()
	tmpl, err := os.ReadFile(templatePath)
	if err != nil {
		t.Fatal(err)
	}
	conf, err := Render(string(tmpl), vars)
	if err != nil {
		t.Fatal(err)
	}
	// t.TempDir's parents are 0700 root: nobody could not reach a prefix
	// inside, so the prefix gets a world-traversable directory of its own.
	prefix, err := os.MkdirTemp("", "switchboard-nginx-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(prefix) })
	if err := os.WriteFile(filepath.Join(prefix, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	GiveToNginx(t, prefix, "nginx.conf")
	return prefix
}

// GiveToNginx makes dir and the named files in it nginx's, when nginx
// runs as nobody; missing files are left out.
func GiveToNginx(t testing.TB, dir string, files ...string) {
	t.Helper()
	if os.Geteuid() != 0 {
		return
	}
	uid, gid := nobodyIDs(t)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if err := os.Chown(filepath.Join(dir, f), uid, gid); err != nil && !os.IsNotExist(err) {
			t.Fatal(err)
		}
	}
}

func nobodyIDs(t testing.TB) (int, int) {
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("running as root needs the user nobody to run nginx: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// Argv runs nginx in the foreground with its own prefix, as nobody when
// the test runs as root.
func Argv(nginx, prefix string, extra ...string) []string {
	argv := []string{nginx, "-p", prefix + "/", "-c", "nginx.conf", "-e", "stderr", "-g", "daemon off;"}
	argv = append(argv, extra...)
	if os.Geteuid() == 0 {
		argv = append([]string{"setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"}, argv...)
	}
	return argv
}

// Start runs nginx from prefix until the test ends.
func Start(t testing.TB, nginx, prefix string) *proctest.Proc {
	t.Helper()
	return proctest.Start(t, "nginx", proctest.CleanEnv(), Argv(nginx, prefix)...)
}

// Check runs nginx -t on the template at templatePath rendered with vars.
func Check(t testing.TB, nginx, templatePath string, vars map[string]string) {
	t.Helper()
	prefix := Prefix(t, templatePath, vars)
	argv := Argv(nginx, prefix, "-t")
	out, err := exec.Command(argv[0], argv[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	t.Logf("nginx -t: %s", bytes.TrimSpace(out))
}

// CompareEnvsubst renders tmpl with envsubst as the nginx image does
// (told the names of the variables in the container's environment, so
// that nginx's own $variables stay) and with Render, and fails the test
// when they differ.
func CompareEnvsubst(t testing.TB, tmpl string, vars map[string]string) {
	t.Helper()
	envsubst, err := exec.LookPath("envsubst")
	if err != nil {
		testenv.Missing(t, "envsubst not found: install gettext-base (apt-get install gettext-base) to compare the rendering with the nginx image's")
	}
	containerEnv := []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "HOSTNAME=nginx"}
	for k, v := range vars {
		containerEnv = append(containerEnv, k+"="+v)
	}
	var format []string
	for _, kv := range containerEnv {
		format = append(format, "${"+kv[:strings.IndexByte(kv, '=')]+"}")
	}
	cmd := exec.Command(envsubst, strings.Join(format, " "))
	cmd.Env = containerEnv
	cmd.Stdin = strings.NewReader(tmpl)
	byImage, err := cmd.Output()
	if err != nil {
		t.Fatalf("envsubst: %v", err)
	}
	byTest, err := Render(tmpl, vars)
	if err != nil {
		t.Fatal(err)
	}
	if string(byImage) != byTest {
		t.Errorf("envsubst and the tests render the template differently:\n%s", firstDiff(string(byImage), byTest))
	}
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
