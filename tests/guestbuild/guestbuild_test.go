package guestbuild

import (
	"bytes"
	"os"
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
