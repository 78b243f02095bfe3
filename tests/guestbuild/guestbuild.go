// Package guestbuild builds the test filters under tests/guests from source
// with the real toolchains: wat2wasm for WebAssembly text, clang with
// wasi-libc for C, and stock Go (GOOS=wasip1, -buildmode=c-shared) for Go
// filters written against the official Proxy-Wasm Go SDK. Outputs are cached
// by the hash of their sources, so every test package shares one build.
//
// A missing toolchain fails the test with the command that installs it: a
// test that cannot build its filter must not pass.
package guestbuild

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
)

// GuestsDir is the directory holding the guests' sources.
func GuestsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "guests")
}

var mu sync.Mutex // one build at a time per process; the cache dedupes across processes

// WAT returns the path of tests/guests/wat/<name>.wat compiled to wasm.
func WAT(t testing.TB, name string) string {
	t.Helper()
	src := filepath.Join(GuestsDir(), "wat", name+".wat")
	return build(t, "wat-"+name, []string{src}, func(out string) *exec.Cmd {
		return exec.Command(tool(t, "wat2wasm"), "--enable-all", "-o", out, src)
	})
}

// WATText compiles WebAssembly text given inline and returns the binary.
func WATText(t testing.TB, text string) []byte {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "inline.wat")
	if err := os.WriteFile(src, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out := build(t, "inline", []string{src}, func(out string) *exec.Cmd {
		return exec.Command(tool(t, "wat2wasm"), "--enable-all", "-o", out, src)
	})
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// C returns the path of tests/guests/c/<name>.c compiled with clang for
// wasm32-wasi as a reactor, against Debian's wasi-libc.
func C(t testing.TB, name string) string {
	t.Helper()
	src := filepath.Join(GuestsDir(), "c", name+".c")
	headers, _ := filepath.Glob(filepath.Join(GuestsDir(), "c", "*.h"))
	return build(t, "c-"+name, append([]string{src}, headers...), func(out string) *exec.Cmd {
		return exec.Command(tool(t, "clang"), "--target=wasm32-wasi", "--sysroot=/usr",
			"-mexec-model=reactor", "-O2", "-Wl,--export=malloc", "-Wl,--strip-all", "-o", out, src)
	})
}

// Go returns the path of the Go filter in tests/guests/<name>, built with
// stock Go for wasip1 as a c-shared module (what the official SDK targets).
func Go(t testing.TB, name string) string {
	t.Helper()
	return GoDir(t, filepath.Join(GuestsDir(), name))
}

// GoDir builds the Go filter in dir (a main package inside a Go module) the
// same way as Go.
func GoDir(t testing.TB, dir string) string {
	t.Helper()
	module := moduleRoot(t, dir)
	sources := goSources(t, module)
	for _, local := range localReplacements(t, module) {
		sources = append(sources, goSources(t, local)...)
	}
	sources = append(sources, filepath.Join(module, "go.mod"), filepath.Join(module, "go.sum"))
	return build(t, "go-"+filepath.Base(dir), sources, func(out string) *exec.Cmd {
		cmd := exec.Command(tool(t, "go"), "build", "-buildmode=c-shared", "-trimpath", "-o", out, ".")
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "GOWORK=off")
		return cmd
	})
}

// build runs the command that makes one output, unless the cache holds the
// output of the same sources already.
func build(t testing.TB, name string, sources []string, command func(out string) *exec.Cmd) string {
	t.Helper()
	h := sha256.New()
	fmt.Fprintln(h, runtime.Version(), name)
	for _, src := range sources {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatalf("guest source: %v", err)
		}
		fmt.Fprintln(h, filepath.Base(src), len(b))
		h.Write(b)
	}
	dir := cacheDir(t)
	out := filepath.Join(dir, name+"-"+hex.EncodeToString(h.Sum(nil))[:16]+".wasm")

	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(out); err == nil {
		return out
	}
	tmp := out + fmt.Sprintf(".%d.tmp", os.Getpid())
	cmd := command(tmp)
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building guest %s: %v\n%s\n%s", name, err, strings.Join(cmd.Args, " "), output)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func cacheDir(t testing.TB) string {
	base := os.Getenv("SLUICE_GUEST_CACHE")
	if base == "" {
		user, err := os.UserCacheDir()
		if err != nil {
			user = os.TempDir()
		}
		base = filepath.Join(user, "sluice-guests")
	}
	if err := os.MkdirAll(base, 0o755); err != nil {
		t.Fatal(err)
	}
	return base
}

// tool finds a toolchain binary or fails the test saying how to get it.
func tool(t testing.TB, name string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s not found: the tests build filters with it; install it with `make deps` "+
			"(Debian: apt-get install wabt clang lld wasi-libc libclang-rt-14-dev-wasm32)", name)
	}
	return path
}

func moduleRoot(t testing.TB, dir string) string {
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
			return d
		}
		if filepath.Dir(d) == d {
			t.Fatalf("no go.mod above %s", dir)
		}
	}
}

// localReplacements lists the directories of the modules the guests' go.mod
// replaces with a local path (Sluice's SDK), whose sources a build depends
// on too.
func localReplacements(t testing.TB, module string) []string {
	gomod, err := os.ReadFile(filepath.Join(module, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, line := range strings.Split(string(gomod), "\n") {
		_, target, ok := strings.Cut(line, "=>")
		if target = strings.TrimSpace(target); ok && (strings.HasPrefix(target, "./") || strings.HasPrefix(target, "../")) {
			dirs = append(dirs, filepath.Join(module, target))
		}
	}
	return dirs
}

// goSources lists the non-test Go files in the module rooted at root, which
// a guest's build may depend on.
func goSources(t testing.TB, root string) []string {
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "testdata" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(files)
	return files
}
