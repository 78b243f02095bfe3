package filters

import (
	"errors"
	"fmt"
)

// Sentinel errors for the ways a guest call fails; a *GuestError wraps one of
// them, so callers test with errors.Is.
var (
	// ErrTimeout: the call ran past the plugin's time budget.
	ErrTimeout = errors.New("time budget exceeded")
	// ErrMemoryLimit: the guest trapped with its memory at its limit, or
	// after the memory budget refused it more.
	ErrMemoryLimit = errors.New("memory limit reached")
	// ErrTrap: the guest trapped (unreachable, out-of-bounds access, stack
	// overflow, a Go panic, ...).
	ErrTrap = errors.New("guest trapped")
	// ErrExit: the guest called proc_exit.
	ErrExit = errors.New("guest exited")
	// ErrABIViolation: the guest broke the ABI in a way that ends the call
	// (an allocator that re-enters the host, an unknown action value, a
	// request left paused with nothing pending, ...).
	ErrABIViolation = errors.New("guest broke the Proxy-Wasm ABI")
	// ErrCanceled: the request ended (the client went away) during the call,
	// or the instance or its plugin was closed.
	ErrCanceled = errors.New("request canceled")
	// ErrHostPanic: Sluice's own host code panicked. A bug, recovered.
	ErrHostPanic = errors.New("host function panicked")
	// ErrRejected: the guest refused to start (proxy_on_vm_start or
	// proxy_on_configure returned false).
	ErrRejected = errors.New("filter rejected its configuration")
	// ErrInstantiate: the module could not be instantiated.
	ErrInstantiate = errors.New("instantiation failed")
	// ErrBodyTooLarge: the filter asked to buffer more than max_body_size.
	ErrBodyTooLarge = errors.New("body larger than max_body_size")
	// ErrRequestBodyTooLarge is ErrBodyTooLarge for the request's body, for
	// which the client gets 413 whatever the failure policy.
	ErrRequestBodyTooLarge = fmt.Errorf("request %w", ErrBodyTooLarge)
)

// errPluginClosed: a request asked a closed plugin for an instance.
var errPluginClosed = errors.New("filter unloaded")

// GuestError reports a failed call into a filter. Once an instance has
// returned one, it is unusable and every later call returns the same error.
type GuestError struct {
	Plugin   string // the filter's name
	Callback string // the export that was running
	Kind     error  // one of the sentinel errors above
	Err      error  // the underlying error, with wazero's stack trace
}

func (e *GuestError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("wasm filter %q: %s: %v", e.Plugin, e.Callback, e.Kind)
	}
	return fmt.Sprintf("wasm filter %q: %s: %v: %v", e.Plugin, e.Callback, e.Kind, e.Err)
}

// Unwrap makes errors.Is match both the kind and the cause.
func (e *GuestError) Unwrap() []error { return []error{e.Kind, e.Err} }

// Reason is a short, stable label for the failure kind, for metrics and logs.
func (e *GuestError) Reason() string {
	switch e.Kind {
	case ErrTimeout:
		return "timeout"
	case ErrMemoryLimit:
		return "memory_limit"
	case ErrTrap:
		return "trap"
	case ErrExit:
		return "exit"
	case ErrABIViolation:
		return "abi_violation"
	case ErrCanceled:
		return "canceled"
	case ErrHostPanic:
		return "host_panic"
	case ErrRejected:
		return "rejected"
	case ErrBodyTooLarge:
		return "body_too_large"
	case ErrInstantiate:
		return "instantiate"
	}
	return "error"
}
