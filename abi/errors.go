package abi

import "fmt"

// Host functions end a guest call by panicking with one of these errors;
// wazero wraps them (with %w) in the error the guest call returns, so the
// runtime tells them apart with errors.As.

// ExitError is raised by proc_exit: the guest chose to stop. It never carries
// a host meaning, whatever the code (the runtime's own timeouts are reported
// differently), so a guest cannot pass its exit off as a host timeout.
type ExitError struct {
	Code uint32
}

func (e *ExitError) Error() string { return fmt.Sprintf("guest exited with code %d", e.Code) }

// GuestFault is raised when a guest breaks the ABI in a way no status can
// express: its allocator trapped, or it called a Proxy-Wasm host function
// from inside its allocator.
type GuestFault struct {
	Func string // host function that detected the fault
	Err  error
}

func (e *GuestFault) Error() string { return fmt.Sprintf("%s: %v", e.Func, e.Err) }

func (e *GuestFault) Unwrap() error { return e.Err }

// HostPanic is raised when a host function itself panicked: a bug in Sluice,
// not in the guest. It keeps the stack for the log.
type HostPanic struct {
	Func  string
	Value any
	Stack []byte
}

func (e *HostPanic) Error() string {
	return fmt.Sprintf("host function %s panicked: %v", e.Func, e.Value)
}
