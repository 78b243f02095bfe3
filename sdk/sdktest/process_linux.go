package sdktest

import (
	"os/exec"
	"syscall"
)

// stopWithTest makes the kernel kill cmd if the test binary dies (a panic,
// go test's timeout) before its cleanup could.
func stopWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
