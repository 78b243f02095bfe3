package guestbuild

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// Every toolchain the tests rely on builds a module.
func TestToolchainsBuildModules(t *testing.T) {
	for name, path := range map[string]string{
		"wat": WAT(t, "add_header"),
		"c":   C(t, "add_header"),
		"go":  Go(t, "headers"),
	} {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(b, []byte("\x00asm")) {
			t.Errorf("%s guest %s is not a wasm module", name, path)
		}
	}
}

// A guest built against Sluice's SDK through a local replace must rebuild
// when the SDK changes, so the SDK's sources are part of its cache key.
func TestLocalReplacementsAreSources(t *testing.T) {
	dirs := localReplacements(t, GuestsDir())
	want := filepath.Join(GuestsDir(), "..", "..", "sdk")
	if len(dirs) != 1 || dirs[0] != filepath.Clean(want) {
		t.Fatalf("local replacements %q, want [%s]", dirs, want)
	}
	found := false
	for _, src := range goSources(t, dirs[0]) {
		found = found || filepath.Base(src) == "stream.go"
	}
	if !found {
		t.Errorf("the SDK's stream.go is not among the sources")
	}
}
