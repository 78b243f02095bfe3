package filters

import (
	"context"
	"testing"
)

// Shared isolation with room in the memory budget for one instance of two
// slots: the first request makes slot 0; a later request tries the empty
// slot 1 first and cannot make it (ErrOverloaded), so slot 0, healthy,
// serves it instead of the request being refused.
func TestSharedPoolServesFromAHealthyInstanceWhenItCannotGrow(t *testing.T) {
	for _, mode := range benchModes {
		t.Run(mode.name, func(t *testing.T) {
			budget := NewMemoryBudget(1 * wasmPageSize) // the prelude guest starts at 1 page
			p := mustLoad(t, guest(t, countingGuest(0)), withShared(2), withBudget(budget), mode.opt)
			for i := 1; i <= 3; i++ {
				if _, err := sharedRequest(context.Background(), p); err != nil {
					t.Errorf("request %d: %v", i, err)
				}
			}
		})
	}
}
