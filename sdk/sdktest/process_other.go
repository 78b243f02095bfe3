//go:build !linux

package sdktest

import "os/exec"

// stopWithTest does nothing here: only Linux kills a child with its parent.
func stopWithTest(*exec.Cmd) {}
