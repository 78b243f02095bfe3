package sdktest

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// Build compiles the filter program in dir (a main package) to a .wasm
// module with stock Go, the way it is deployed, and returns its path:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o <tmp>/<dir's name>.wasm <dir>
//
// The file is named after the directory, so Sluice names the filter after
// it in logs and metrics.
func Build(t testing.TB, dir string) string {
	t.Helper()
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), filepath.Base(abs)+".wasm")
	cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm")
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building %s for wasip1: %v\n%s", dir, err, output)
	}
	return out
}
