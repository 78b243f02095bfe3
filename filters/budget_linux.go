//go:build linux

package filters

import "syscall"

// defaultBudgetLimit is half the machine's memory.
func defaultBudgetLimit() uint64 {
	var info syscall.Sysinfo_t
	if err := syscall.Sysinfo(&info); err != nil || info.Totalram == 0 {
		return 4 << 30
	}
	return uint64(info.Totalram) * uint64(info.Unit) / 2
}
