package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/tetratelabs/wazero"
	"go.uber.org/zap"

	"github.com/sluice-edge/sluice/filters"
)

// plugins holds the loaded filters of every live config. On a reload Caddy
// provisions the new config before cleaning up the old one, so an unchanged
// filter is found here and not compiled again, and the old config's
// in-flight requests keep using it until both configs let go.
var plugins = caddy.NewUsagePool()

// sharedPlugin is a pooled filter; the pool closes it when unused.
type sharedPlugin struct{ *filters.Plugin }

// Destruct implements caddy.Destructor.
func (p sharedPlugin) Destruct() error { return p.Close(context.Background()) }

// poolKey identifies a filter by everything that makes it: the module's
// bytes and every setting.
func poolKey(cfg filters.Config) string {
	moduleSum := sha256.Sum256(cfg.Module)
	cfg.Module = nil
	settings, _ := json.Marshal(struct {
		Module []byte
		Config filters.Config
	}{moduleSum[:], cfg})
	sum := sha256.Sum256(settings)
	return hex.EncodeToString(sum[:])
}

// loadShared returns the pooled filter for key, loading it if no live config
// has it.
func loadShared(ctx caddy.Context, key string, cfg filters.Config, logger *zap.Logger) (*filters.Plugin, error) {
	cfg.CompilationCache = compilationCache(logger)
	cfg.LoadLog = &loadLog{logger: logger}
	cfg.BackgroundLog = newBackgroundLog(logger)
	cfg.Events = newPluginEvents(logger)
	v, _, err := plugins.LoadOrNew(key, func() (d caddy.Destructor, err error) {
		// A panic must not escape: the pool would keep the key locked, and
		// every later load of this filter would wait on it forever.
		defer func() {
			if v := recover(); v != nil {
				logger.Error("loading a filter panicked", zap.Any("panic", v), zap.Stack("stack"))
				d, err = nil, fmt.Errorf("loading the filter panicked (a bug in Sluice): %v", v)
			}
		}()
		p, err := loadPlugin(ctx, cfg)
		if err != nil {
			return nil, err
		}
		return sharedPlugin{p}, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(sharedPlugin).Plugin, nil
}

// loadPlugin is filters.Load; tests replace it.
var loadPlugin = filters.Load

var (
	cacheOnce sync.Once
	cache     wazero.CompilationCache
)

// compilationCache is the process-wide cache of compiled filters, on disk in
// Caddy's data directory when it is writable, so that a restart or reload
// does not compile an unchanged module again. wazero keys entries by the
// module's hash and its own version.
func compilationCache(logger *zap.Logger) wazero.CompilationCache {
	cacheOnce.Do(func() {
		dir := filepath.Join(caddy.AppDataDir(), "wasm_filter", "compilation-cache")
		if err := os.MkdirAll(dir, 0o700); err == nil {
			if cache, err = wazero.NewCompilationCacheWithDir(dir); err == nil {
				return
			}
		}
		logger.Warn("no on-disk compilation cache; filters are compiled on every start", zap.String("dir", dir))
		cache = wazero.NewCompilationCache()
	})
	return cache
}
