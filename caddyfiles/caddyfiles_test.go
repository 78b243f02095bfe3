// Package caddyfiles_test keeps the operator configs in this directory from
// rotting: each *.Caddyfile must adapt (as `caddy adapt` does) without
// errors or warnings to the JSON in testdata/<name>.json.
//
// After an intended change, rewrite the goldens and review their diff:
//
//	go test ./caddyfiles/ -update
package caddyfiles_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	// Every standard Caddy module (as in cmd/caddy), and wasm_filter.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/sluice-edge/sluice/caddymodule"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata")

// caddyfiles returns the configs in this directory.
func caddyfiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.Caddyfile")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no *.Caddyfile in caddyfiles/")
	}
	return files
}

// adapt runs the Caddyfile adapter on src, naming it filename in errors.
func adapt(t *testing.T, filename string, src []byte) ([]byte, []caddyconfig.Warning, error) {
	t.Helper()
	adapter := caddyconfig.GetAdapter("caddyfile")
	if adapter == nil {
		t.Fatal("no caddyfile adapter registered")
	}
	return adapter.Adapt(src, map[string]any{"filename": filename})
}

func goldenPath(caddyfile string) string {
	return filepath.Join("testdata", strings.TrimSuffix(caddyfile, ".Caddyfile")+".json")
}

func TestCaddyfilesAdaptToGoldenJSON(t *testing.T) {
	for _, file := range caddyfiles(t) {
		t.Run(strings.TrimSuffix(file, ".Caddyfile"), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			out, warnings, err := adapt(t, file, src)
			if err != nil {
				t.Fatalf("adapt: %v", err)
			}
			for _, w := range warnings {
				t.Errorf("warning: %s", w)
			}
			var got bytes.Buffer
			if err := json.Indent(&got, out, "", "\t"); err != nil {
				t.Fatal(err)
			}
			got.WriteByte('\n')

			golden := goldenPath(file)
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run `go test ./caddyfiles/ -update` to create it)", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("%s no longer adapts to %s (run `go test ./caddyfiles/ -update` if the change is intended):\n%s",
					file, golden, firstDifference(string(want), got.String()))
			}
		})
	}
}

// A golden without its Caddyfile is a config that was renamed or removed.
func TestEveryGoldenHasACaddyfile(t *testing.T) {
	goldens, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, golden := range goldens {
		name := strings.TrimSuffix(filepath.Base(golden), ".json") + ".Caddyfile"
		if _, err := os.Stat(name); err != nil {
			t.Errorf("%s has no %s: delete it or restore the Caddyfile", golden, name)
		}
	}
}

// firstDifference shows the first line where want and got differ and the
// two after it in each, with a few lines of context before.
func firstDifference(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d (- golden, + adapted):\n", i+1)
	for j := max(0, i-3); j < i; j++ {
		fmt.Fprintf(&b, "  %4d   %s\n", j+1, w[j])
	}
	for j := i; j < min(len(w), i+3); j++ {
		fmt.Fprintf(&b, "- %4d   %s\n", j+1, w[j])
	}
	for j := i; j < min(len(g), i+3); j++ {
		fmt.Fprintf(&b, "+ %4d   %s\n", j+1, g[j])
	}
	fmt.Fprintf(&b, "(golden %d lines, adapted %d lines)", len(w), len(g))
	return b.String()
}

// A mistake in a copy of any of these configs fails to adapt, naming the
// file, the line and the problem: here an unknown option in the first
// wasm_filter block.
func TestCaddyfilesWithAnUnknownOptionFailToAdapt(t *testing.T) {
	for _, file := range caddyfiles(t) {
		t.Run(strings.TrimSuffix(file, ".Caddyfile"), func(t *testing.T) {
			src, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(string(src), "\n")
			at := -1
			for i, line := range lines {
				trimmed := strings.TrimSpace(line)
				if strings.HasPrefix(trimmed, "wasm_filter ") && strings.HasSuffix(trimmed, "{") {
					at = i + 1
					break
				}
			}
			if at < 0 {
				t.Fatal("no wasm_filter block to break")
			}
			broken := slices.Insert(lines, at, "\t\tbogus_option 1")
			out, _, err := adapt(t, file, []byte(strings.Join(broken, "\n")))
			if err == nil {
				t.Fatalf("adapted with an unknown option on line %d:\n%s", at+1, out)
			}
			for _, want := range []string{`unknown wasm_filter option "bogus_option"`, fmt.Sprintf("%s:%d", file, at+1)} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}
