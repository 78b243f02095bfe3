package filters

import (
	"context"
	"testing"

	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
)

// callCounter counts the calls of the guest functions named in it (their
// wasm debug names), and notes which of them the module has at all.
type callCounter struct {
	calls   map[string]int
	defined map[string]bool
}

func (c *callCounter) NewFunctionListener(def api.FunctionDefinition) experimental.FunctionListener {
	name := def.DebugName()
	if _, ok := c.calls[name]; !ok {
		return nil
	}
	c.defined[name] = true
	return countCalls{c, name}
}

type countCalls struct {
	c    *callCounter
	name string
}

func (l countCalls) Before(context.Context, api.Module, api.FunctionDefinition, []uint64, experimental.StackIterator) {
	l.c.calls[l.name]++
}
func (countCalls) After(context.Context, api.Module, api.FunctionDefinition, []uint64) {}
func (countCalls) Abort(context.Context, api.Module, api.FunctionDefinition, error)    {}

// A request through a filter built with Sluice's SDK takes the Go runtime's
// fast paths: configuration left the runtime ready for it (interface
// assertions cached, the allocator holding memory of each size a stream
// needs; sdk/vm.go). Under snapshots every request starts from that state,
// so a slow path taken once in a request is taken in every request: they
// had doubled the guest's time.
func TestSDKRequestsSkipTheRuntimeSlowPaths(t *testing.T) {
	slow := []string{".runtime.itabInit", ".runtime.__mcentral_.cacheSpan", ".runtime.__mheap_.alloc"}
	counter := &callCounter{calls: map[string]int{}, defined: map[string]bool{}}
	for _, name := range slow {
		counter.calls[name] = 0
	}
	ctx := experimental.WithFunctionListenerFactory(context.Background(), counter)
	p, err := Load(ctx, config(sluiceSDKHeadersModule(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close(context.Background())
	for _, name := range slow {
		if !counter.defined[name] {
			t.Fatalf("the guest has no function %s: the Go runtime changed, and this test with it", name)
		}
		counter.calls[name] = 0
	}
	for range 10 {
		if err := lifecycle(ctx, p, newExchange(), 3); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range slow {
		if n := counter.calls[name]; n > 0 {
			t.Errorf("10 requests called %s %d times, want none", name, n)
		}
	}
}
