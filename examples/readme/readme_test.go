// Package readme checks the filter author's path in the repository's
// README: its Go code, as printed there, builds for Wasm and passes its
// own tests, natively and in a real Caddy.
package readme

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestReadmeFilterPath(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	start := strings.Index(text, "## Write a filter in five minutes")
	end := strings.Index(text, "## Run Sluice at the edge")
	if start < 0 || end < start {
		t.Fatal("the README has no author's path section")
	}
	blocks := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(text[start:end], -1)
	if len(blocks) != 2 {
		t.Fatalf("%d Go blocks in the author's path, want 2 (the filter, its test)", len(blocks))
	}
	sdk, err := filepath.Abs("../../sdk")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := map[string]string{
		"go.mod": "module readme\n\ngo 1.24\n\nrequire github.com/sluice-edge/sluice/sdk v0.0.0\n\n" +
			"replace github.com/sluice-edge/sluice/sdk => " + sdk + "\n",
		"main.go": blocks[0][1],
		// The README shows the test's body; the imports are what any
		// sdktest file has.
		"main_test.go": "package main\n\nimport (\n\t\"testing\"\n\n\t\"github.com/sluice-edge/sluice/sdk/sdktest\"\n)\n\n" + blocks[1][1],
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, dir, nil, "go", "vet", ".")
	run(t, dir, []string{"GOOS=wasip1", "GOARCH=wasm"}, "go", "build", "-buildmode=c-shared", "-o", "filter.wasm", ".")
	out := run(t, dir, nil, "go", "test", "-count=1", "-v", ".")
	for _, test := range []string{"TestNative", "TestInCaddy"} {
		if !strings.Contains(out, "--- PASS: "+test) {
			t.Errorf("%s did not pass:\n%s", test, out)
		}
	}
}

func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod"), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
